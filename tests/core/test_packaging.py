"""What each distribution tells the package index, and what the dev toolchain pins.

A distribution must carry the licence it claims, its project URLs, the Python versions it
supports, a README whose links work off the repository, and dependency ranges with an upper
bound on majors nobody tested. The dev lock must pin every package exactly.
"""

from __future__ import annotations

import pathlib
import re
import tomllib
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIST_DIRS = sorted(
    p.parent
    for p in [
        ROOT / "dispatch_core" / "pyproject.toml",
        *ROOT.glob("dispatch_plugins/*/pyproject.toml"),
        *ROOT.glob("adapters/*/pyproject.toml"),
    ]
)
#: Names held on the public index by unrelated projects (checked with `pip index versions`).
TAKEN_ELSEWHERE = {"dispatch-relay", "dispatch", "dispatch-py", "dispatch-cli", "dispatch-kit"}


def _project(d: pathlib.Path) -> dict[str, Any]:
    return tomllib.loads((d / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def test_there_are_ten_distributions() -> None:
    assert len(DIST_DIRS) == 10, DIST_DIRS


@pytest.mark.parametrize("d", DIST_DIRS, ids=lambda d: d.name)
def test_each_distribution_carries_its_licence(d: pathlib.Path) -> None:
    project = _project(d)
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (d / "LICENSE").read_text()
    assert text.startswith("MIT License"), d
    assert text == (ROOT / "LICENSE").read_text()


@pytest.mark.parametrize("d", DIST_DIRS, ids=lambda d: d.name)
def test_each_distribution_has_urls_and_python_classifiers(d: pathlib.Path) -> None:
    project = _project(d)
    urls = project["urls"]
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Changelog", "Issues"}
    base = urls["Homepage"]
    assert all(u.startswith(base) for u in urls.values()), urls
    assert urls["Source"] == f"{base}/tree/main/{d.relative_to(ROOT)}"
    assert project["requires-python"] == ">=3.11"
    versions = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert versions, project["classifiers"]
    assert versions[0] == "3.11", versions
    assert "Programming Language :: Python :: 3 :: Only" in project["classifiers"]


@pytest.mark.parametrize("d", DIST_DIRS, ids=lambda d: d.name)
def test_readmes_link_absolutely(d: pathlib.Path) -> None:
    """The package index shows the README alone: a relative link there leads nowhere."""
    text = (d / _project(d)["readme"]).read_text()
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert re.match(r"(https?|mailto):", target), f"{d.name}/README.md links to {target}"


@pytest.mark.parametrize("d", DIST_DIRS, ids=lambda d: d.name)
def test_dependency_ranges_are_bounded_where_untested(d: pathlib.Path) -> None:
    """Every third-party dependency has a lower bound; those following semantic versioning have
    an upper bound at the next major (calendar-versioned attrs and cattrs have none)."""
    project = _project(d)
    deps = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        deps.extend(extra)
    for dep in deps:
        assert ">=" in dep, dep
        if dep.startswith(("attrs", "cattrs")):
            continue
        assert "<" in dep, f"{d.name}: {dep} has no upper bound"


def test_no_distribution_takes_a_name_held_by_another_project() -> None:
    names = {_project(d)["name"] for d in DIST_DIRS}
    assert not names & TAKEN_ELSEWHERE, names & TAKEN_ELSEWHERE
    assert all(n.startswith("dispatch-") for n in names)


def test_testing_extra_brings_what_dispatch_core_testing_needs() -> None:
    extra = _project(ROOT / "dispatch_core")["optional-dependencies"]["testing"]
    assert any(dep.startswith("pytest>=") for dep in extra)
    assert any(dep.startswith("pytest-asyncio>=") for dep in extra)


def test_the_dev_lock_pins_every_package_exactly() -> None:
    """requirements-dev.txt is `make lock`'s output: only `name==version` lines (with
    environment markers), no range, no editable, and every top-level tool of the .in in it."""
    lock = (ROOT / "requirements-dev.txt").read_text().splitlines()
    pins = [line for line in lock if line and not line.startswith(("#", " "))]
    assert len(pins) > 50
    names = set()
    for line in pins:
        assert re.fullmatch(r"[A-Za-z0-9._\[\],-]+==[^\s;]+( ; .+)?", line), line
        names.add(re.split(r"[=\[]", line, maxsplit=1)[0].lower().replace("_", "-"))
    wanted = [
        re.split(r"[<>=\[ ]", line, maxsplit=1)[0].lower()
        for line in (ROOT / "requirements-dev.in").read_text().splitlines()
        if line and not line.startswith(("#", "-e"))
    ]
    assert wanted
    assert set(wanted) <= names, set(wanted) - names
    for tool in ("pytest", "mypy", "ruff", "redis", "pip", "hatchling"):
        assert tool in names, tool


def test_make_setup_and_ci_install_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "REQUIREMENTS ?= requirements-dev.txt" in makefile
    assert re.search(r"pip install --quiet \$\(RESOLVE\) -r \$\(REQUIREMENTS\)", makefile)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make setup" in ci
    assert "make test" in ci
