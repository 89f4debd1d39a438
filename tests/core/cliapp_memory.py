"""A Dispatch application on the in-memory store, for the CLI tests.

The tests import it fresh for each test; CLI invocations made with ``--app
cliapp_memory:engine`` then share its engine (and its store) within the test.
"""

from __future__ import annotations

from dispatch_core import Engine

engine = Engine("memory://", load_entrypoints=False)
other = object()


@engine.job(name="cliapp.add")
def add(x: int) -> int:
    return x + 1


@engine.job(name="cliapp.boom", queue="errors", max_retries=0)
def boom(x: int) -> None:
    raise ValueError(f"boom {x}\nsecond line")
