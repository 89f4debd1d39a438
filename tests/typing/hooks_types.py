"""Checked by mypy (``make lint``), not run: lifecycle hooks are emitted by a checked name.

``engine.hooks.emit`` and ``wants`` take a :data:`~dispatch_core.hookspecs.LifecycleHook`, so a
misspelled name is a type error (each ``type: ignore`` below must be needed) before it is the
``ValueError`` it raises at run time.
"""

from __future__ import annotations

from dispatch_core import Engine
from dispatch_core.hookspecs import LIFECYCLE_HOOKS, LifecycleHook

engine = Engine("memory://", load_entrypoints=False)

if engine.hooks.wants("dispatch_job_completed"):
    engine.hooks.emit("dispatch_job_completed", job=None, engine=engine)
engine.hooks.emit("dispatch_job_complete", engine=engine)  # type: ignore[arg-type]
engine.hooks.wants("dispatch_jobs_failed")  # type: ignore[arg-type]

name: str = "dispatch_job_failed"
engine.hooks.wants(name)  # type: ignore[arg-type]
for hook in LIFECYCLE_HOOKS:
    known: LifecycleHook = hook
    engine.hooks.wants(known)
