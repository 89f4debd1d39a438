"""A Dispatch application whose jobs and workflow pass long bodies through, for the CLI tests
of previews in listings.

The tests import it fresh for each test; CLI invocations made with ``--app
cliapp_previews:engine`` share its engine (and its memory store) within the test.
"""

from __future__ import annotations

from dispatch_core import Engine, Workflow

engine = Engine("memory://", load_entrypoints=False)


@engine.job(name="cliapp.echo")
def echo(text: str) -> str:
    return text


@engine.job(name="cliapp.reject", max_retries=0)
def reject(text: str) -> None:
    raise ValueError("rejected")


@engine.workflow(name="cliapp.mirror")
async def mirror(wf: Workflow, text: str) -> str:
    return text
