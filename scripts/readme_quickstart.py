"""The README quick start, as a new user runs it after the Install section's first line: save
the code as myapp.py, `python myapp.py`, then `dispatch worker myapp:engine`, which must run
the job. Run with the Python of the venv under test, from an empty directory (the script
writes myapp.py and jobs.db there). scripts/check_wheels.sh calls it."""

from __future__ import annotations

import pathlib
import re
import signal
import sqlite3
import subprocess
import sys
import time

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
PYTHON = pathlib.Path(sys.executable)
DISPATCH = PYTHON.with_name("dispatch")

_, _, rest = README.read_text().partition("\n## Quick start\n")
code = re.search(r"^```python\n(.*?)^```", rest, re.DOTALL | re.MULTILINE)
assert code, "README.md: no python block after '## Quick start'"
pathlib.Path("myapp.py").write_text(code.group(1))

out = subprocess.run([PYTHON, "myapp.py"], capture_output=True, text=True, check=True).stdout
found = re.fullmatch(r"enqueued (job_\w+) as myapp\.send_welcome\n", out)
assert found, f"python myapp.py printed {out!r}"
job_id = found.group(1)


def state() -> str | None:
    with sqlite3.connect("jobs.db") as db:
        row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else str(row[0])


with open("worker.log", "w") as log:
    worker = subprocess.Popen([DISPATCH, "worker", "myapp:engine"], stdout=log, stderr=log)
try:
    deadline = time.monotonic() + 60
    while state() != "completed":
        assert worker.poll() is None, pathlib.Path("worker.log").read_text()
        assert time.monotonic() < deadline, f"job {job_id} is {state()} after 60 s"
        time.sleep(0.1)
finally:
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(30)
assert code == 0, f"the worker exited {code}: {pathlib.Path('worker.log').read_text()}"
with sqlite3.connect("jobs.db") as db:
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,), "the import enqueued"
print(f"install check ok: the README quick start ran job {job_id} under dispatch worker")
