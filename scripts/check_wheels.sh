#!/usr/bin/env bash
# Proves `pip install dispatch-core dispatch-sqlite` works from the built wheels alone: a missing
# dependency declaration fails here, where an editable dev install would hide it.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --upgrade pip
"$tmp/venv/bin/python" -m pip install --quiet dist/dispatch_core-*.whl dist/dispatch_sqlite-*.whl
cd "$tmp"
"$tmp/venv/bin/python" - <<'PY'
import asyncio
import importlib.metadata as md

import dispatch_core
import dispatch_plugins.sqlite
from dispatch_core import Engine

eps = {ep.name for ep in md.entry_points(group="dispatch_core.plugins")}
assert "sqlite" in eps, eps
engine = Engine()  # the embedded default: sqlite:///dispatch.db
assert engine.url == "sqlite:///dispatch.db", engine.url


@engine.job(name="smoke")
async def smoke(n: int) -> int:
    return n + 1


async def main() -> None:
    job = await smoke.aenqueue(41)
    await engine.drain()
    assert (await engine.aget_job(job.id)).result == 42
    await engine.aclose()


asyncio.run(main())
print("wheel check ok:", dispatch_core.__version__, sorted(eps))
PY
"$tmp/venv/bin/dispatch" --help >/dev/null
echo "dispatch CLI from the wheel: ok"
