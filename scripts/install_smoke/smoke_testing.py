"""dispatch-core[testing]: pytest comes with it, and a user's test file runs as the testing
guide writes it: the conformance suite on the memory store, and an async test of a job."""

from __future__ import annotations

import pathlib
import subprocess
import sys

TEST_FILE = """
import pytest

from dispatch_core import Engine
from dispatch_core.stores import MemoryStore
from dispatch_core.testing import StoreConformance


class TestMemory(StoreConformance):
    @pytest.fixture
    def store_factory(self):
        store = MemoryStore()
        return lambda: store


async def test_a_job_runs() -> None:
    engine = Engine("memory://")

    @engine.job(name="double")
    async def double(n: int) -> int:
        return n * 2

    job = await double.aenqueue(21)
    await engine.drain()
    assert (await engine.aget_job(job.id)).result == 42
    await engine.aclose()
"""

here = pathlib.Path.cwd() / "testing-check"
here.mkdir(exist_ok=True)
(here / "test_user.py").write_text(TEST_FILE)
(here / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
run = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
    cwd=here,
    capture_output=True,
    text=True,
    check=False,
)
print(run.stdout[-600:])
assert run.returncode == 0, run.stdout + run.stderr
assert " passed" in run.stdout and "failed" not in run.stdout, run.stdout
print("install check ok: dispatch-core[testing]")
