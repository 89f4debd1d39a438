#!/usr/bin/env bash
# Proves `pip install dispatch-core dispatch-sqlite` and `pip install dispatch-core
# dispatch-postgres` work from the built wheels alone: a missing dependency declaration fails
# here, where an editable dev install would hide it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fresh_venv() {
  python3 -m venv "$tmp/$1"
  "$tmp/$1/bin/python" -m pip install --quiet --upgrade pip
  "$tmp/$1/bin/python" -m pip install --quiet "$root"/dist/dispatch_core-*.whl "$root"/dist/"$2"-*.whl
}

# dispatch-core + dispatch-sqlite: the embedded default.
fresh_venv sqlite dispatch_sqlite
cd "$tmp"
"$tmp/sqlite/bin/python" - <<'PY'
import asyncio
import importlib.metadata as md

import dispatch_core
import dispatch_plugins.sqlite
from dispatch_core import Engine

eps = {ep.name for ep in md.entry_points(group="dispatch_core.plugins")}
assert eps == {"sqlite"}, eps
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
print("wheel check ok: dispatch-core + dispatch-sqlite", dispatch_core.__version__)
PY
"$tmp/sqlite/bin/dispatch" --help >/dev/null
echo "dispatch CLI from the wheel: ok"

# dispatch-core + dispatch-postgres: what production users install.
fresh_venv postgres dispatch_postgres
"$tmp/postgres/bin/python" - <<'PY'
import asyncio
import importlib.metadata as md
import os
import uuid

import psycopg

import dispatch_plugins.postgres
from dispatch_core import Engine

eps = {ep.name for ep in md.entry_points(group="dispatch_core.plugins")}
assert eps == {"postgres"}, eps
assert psycopg.pq.__impl__ in ("binary", "c"), psycopg.pq.__impl__
dsn = os.environ.get("DISPATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
schema = f"wheelcheck_{uuid.uuid4().hex[:8]}"
engine = Engine(f"{dsn}?schema={schema}")


@engine.job(name="smoke")
async def smoke(n: int) -> int:
    return n + 1


async def main() -> None:
    try:
        job = await smoke.aenqueue(41)
        await engine.drain()
        assert (await engine.aget_job(job.id)).result == 42
    finally:
        await engine.aclose()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


asyncio.run(main())
print("wheel check ok: dispatch-core + dispatch-postgres")
PY
