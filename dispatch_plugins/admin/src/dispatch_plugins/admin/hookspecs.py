"""The hooks dispatch-admin calls, for other plugins to implement.

dispatch-admin adds these specifications to a plugin manager when it registers there (its
``dispatch_add_hookspecs`` implementation), and :func:`~dispatch_plugins.admin.admin_app`
makes sure of them before calling, so a plugin that adds routes implements them as it does
any core hook, with :data:`dispatch_core.hookimpl`.

Every engine loads dispatch-admin's plugin module, which imports this one: keep it light.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pluggy

from dispatch_core.hookspecs import hookspec

if TYPE_CHECKING:
    from dispatch_core.engine import Engine

__all__ = ["add_hookspecs", "HOOKS"]


@hookspec
def dispatch_register_routes(routes: list[Any], engine: Engine) -> None:
    """Add HTTP routes to the admin application (used by dispatch-admin).

    Args:
        routes: The route list being built; append to it.
        engine: The engine the admin app serves.

    .. versionadded:: 0.1
    """


#: The names of the hooks specified here.
HOOKS: tuple[str, ...] = ("dispatch_register_routes",)


def add_hookspecs(pm: pluggy.PluginManager) -> None:
    """Add dispatch-admin's hook specifications to ``pm``, unless they are there already.

    Args:
        pm: A plugin manager of the ``dispatch`` project (an engine's ``engine.pm``).
    """
    caller = getattr(pm.hook, HOOKS[0], None)
    if caller is None or not caller.has_spec():
        # Implementations registered before the spec are checked against it now.
        pm.add_hookspecs(sys.modules[__name__])
