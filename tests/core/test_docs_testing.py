"""docs/testing.md runs as written, and ``dispatch_core.testing`` says how to get pytest.

The page marks each block that belongs to a file with ``<!-- file: NAME -->`` on the line
before it (blocks of one name are joined in order; NAME may have a directory). Every python,
toml and ini block must carry a mark. The test writes the files into a temporary directory
and runs pytest in a subprocess for each configuration file among them (``pyproject.toml``,
``pytest.ini``), in that file's directory, with that file as the only configuration: the
repository's own pytest settings and conftest files do not apply.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dispatch_core.testing import StoreConformance

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs/testing.md"
RUNNABLE = {"python", "toml", "ini"}
CONFIGS = {"pyproject.toml", "pytest.ini"}
_MARK = re.compile(r"<!-- file: (\S+) -->")
_FENCE = re.compile(r"```(\S*)\s*")

#: The conformance suite's tests: the page runs it once, on the memory store.
CONFORMANCE = len([n for n in dir(StoreConformance) if n.startswith("test_")])
#: Tests each project of the page must run (and pass): the page's own tests by file.
EXPECTED = {
    "pyproject.toml": 4 + 1 + 1 + CONFORMANCE,  # test_jobs, test_signup, test_workflows, store
    "strict/pytest.ini": 1,
}


def page_files(text: str, where: str = "docs/testing.md") -> dict[str, str]:
    """The files the page's marked blocks make, by relative path.

    Raises:
        ValueError: a mark not followed by a code block, a runnable block without a mark, an
            unclosed block, or an unsafe path; the message names the line.
    """
    files: dict[str, list[str]] = {}
    lines = text.splitlines()
    pending: tuple[str, int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        mark = _MARK.fullmatch(line)
        if mark:
            name = mark.group(1)
            if name.startswith("/") or ".." in Path(name).parts:
                raise ValueError(f"{where}:{i + 1}: file {name!r} must be a relative path")
            pending = (name, i + 1)
            i += 1
            continue
        fence = _FENCE.fullmatch(line)
        if fence is None:
            if pending is not None and line:
                raise ValueError(f"{where}:{pending[1]}: the file mark is not followed by a block")
            i += 1
            continue
        lang, start = fence.group(1), i + 1
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{where}:{start}: the code block is never closed")
        if pending is not None:
            files.setdefault(pending[0], []).append("\n".join(lines[i + 1 : end]))
            pending = None
        elif lang in RUNNABLE:
            raise ValueError(
                f"{where}:{start}: a {lang} block without a <!-- file: NAME --> mark on the line "
                "before it (every such block must run)"
            )
        i = end + 1
    if pending is not None:
        raise ValueError(f"{where}:{pending[1]}: the file mark is not followed by a block")
    return {name: "\n\n\n".join(blocks) + "\n" for name, blocks in files.items()}


def test_the_parser_rejects_unmarked_and_dangling_blocks() -> None:
    assert page_files("<!-- file: a.py -->\n```python\nx = 1\n```\n") == {"a.py": "x = 1\n"}
    with pytest.raises(ValueError, match=r"page:1: a python block without"):
        page_files("```python\nx = 1\n```\n", "page")
    with pytest.raises(ValueError, match=r"page:1: the file mark is not followed"):
        page_files("<!-- file: a.py -->\ntext\n```python\nx = 1\n```\n", "page")
    with pytest.raises(ValueError, match=r"must be a relative path"):
        page_files("<!-- file: ../a.py -->\n```python\nx = 1\n```\n", "page")
    assert page_files("```sh\npip install x\n```\n") == {}  # shell is shown, not run


def test_every_runnable_block_of_the_page_is_marked() -> None:
    files = page_files(PAGE.read_text())
    configs = sorted(name for name in files if Path(name).name in CONFIGS)
    assert configs == sorted(EXPECTED), "a project was added or removed: update EXPECTED"
    projects = {Path(c).parent for c in configs}
    for name in files:  # pytest runs in each configuration's directory, and only there
        assert Path(name).parent in projects, f"{name} is beside no pytest configuration"


def _clean_env() -> dict[str, str]:
    drop = ("DISPATCH_", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(EXPECTED))
def test_the_testing_page_runs(tmp_path: Path, config: str) -> None:
    for name, text in page_files(PAGE.read_text()).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    project = (tmp_path / config).parent
    tests = sorted(p.name for p in project.glob("test_*.py"))
    assert tests, f"no test file beside {config}"
    report = tmp_path / "report.xml"
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", Path(config).name,
            "--rootdir", str(project), "-W", "error", "-q", f"--junitxml={report}", *tests,
        ],
        cwd=project, env=_clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = f"{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, output
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")  # type: ignore[assignment]
    assert suite is not None, output
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": EXPECTED[config], "failures": 0, "errors": 0, "skipped": 0}, output


# A meta-path finder that makes pytest look uninstalled, as the import system reports it.
_WITHOUT_PYTEST = """
import sys

class NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPytest())

import dispatch_core  # the core itself needs no pytest
dispatch_core.Engine("memory://", load_entrypoints=False)
try:
    import dispatch_core.testing
except ImportError as exc:
    print(f"{type(exc).__name__}: {exc}")
else:
    print("imported")
"""


@pytest.mark.slow
def test_the_testing_helpers_without_pytest_say_what_to_install() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PYTEST],
        env=_clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "ModuleNotFoundError: dispatch_core.testing needs pytest, which is not installed: "
        "pip install 'dispatch-core[testing]'"
    )
