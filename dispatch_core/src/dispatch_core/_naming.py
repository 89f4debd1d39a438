"""Default names of jobs and workflows: ``module.qualname``, with the module a worker imports.

A handler defined in a script run as ``python myapp.py`` lives in the module ``__main__``,
while ``dispatch worker myapp:engine`` imports the same file as ``myapp``. Naming the job
after ``__main__`` would enqueue it under a name no worker registers, so the script's module
is named as the worker will import it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["default_name", "importable_module_name"]

#: Names a script's module goes by: ``__main__``, and ``__mp_main__`` when multiprocessing
#: (spawn) runs the main script again in a child process.
_MAIN_NAMES = frozenset({"__main__", "__mp_main__"})


def default_name(fn: Callable[..., Any]) -> str:
    """The name a job or workflow gets without ``name=``: ``module.qualname``.

    Args:
        fn: The handler.

    Returns:
        ``module.qualname``, where a script's ``__main__`` is replaced by the module name a
        worker importing the same file registers (see :func:`importable_module_name`).
    """
    module = getattr(fn, "__module__", None) or "__main__"
    return f"{importable_module_name(module)}.{fn.__qualname__}"


def importable_module_name(module: str) -> str:
    """The name under which a worker imports ``module``.

    Only a script's module (``__main__``) is renamed: run as ``python -m pkg.mod``, it is
    ``pkg.mod`` (its ``__spec__.name``); run as ``python path/to/file.py``, it is the file's
    path relative to the current directory as a dotted name (``app/tasks.py`` ->
    ``app.tasks``) when the file lies under it and every part is an identifier, else the
    file's stem. With no file (the REPL, ``python -c``), it stays ``__main__``.

    Args:
        module: A module name, as in a function's ``__module__``.
    """
    if module not in _MAIN_NAMES:
        return module
    main = sys.modules.get(module)
    if main is None:
        return module
    spec = getattr(main, "__spec__", None)
    spec_name = getattr(spec, "name", None)
    if isinstance(spec_name, str) and spec_name and spec_name not in _MAIN_NAMES:
        return spec_name
    file = getattr(main, "__file__", None)
    if not isinstance(file, str) or not file:
        return module
    return _module_of_file(Path(file))


def _module_of_file(file: Path) -> str:
    """``app.tasks`` for ``<cwd>/app/tasks.py``; the stem for a file elsewhere."""
    try:
        path = file.resolve()
        relative = path.relative_to(Path(os.getcwd()).resolve())
    except (OSError, ValueError):  # a vanished cwd, or a file outside it
        return file.stem
    parts = [*relative.parent.parts, relative.stem]
    if all(part.isidentifier() for part in parts):
        return ".".join(parts)
    return file.stem
