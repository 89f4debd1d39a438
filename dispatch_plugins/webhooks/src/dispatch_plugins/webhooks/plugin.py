"""The module dispatch-core loads into every engine through the ``webhooks`` entry point.

It does nothing unless ``DISPATCH_WEBHOOKS_CONFIG`` names a JSON file of endpoints: then each
new engine gets a :class:`~dispatch_plugins.webhooks.Relay` built from that file. An engine given
a ``Relay`` explicitly (``Engine(url, plugins=[relay])``) keeps that one alone: the explicit
relay wins and the file is not read, so no event is delivered twice.

Importing this module costs nothing beyond dispatch-core: it implements a single
registration hook, called once per engine, and imports the relay lazily.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dispatch_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from dispatch_core import Engine

__all__ = ["CONFIG_ENV", "dispatch_register_jobs"]

#: The environment variable naming the relay's JSON configuration file.
CONFIG_ENV = "DISPATCH_WEBHOOKS_CONFIG"
#: The plugin name the configured relay is registered under.
PLUGIN_NAME = "dispatch_plugins.webhooks.configured"


@hookimpl
def dispatch_register_jobs(engine: Engine) -> None:
    """Give ``engine`` a relay built from ``$DISPATCH_WEBHOOKS_CONFIG``, unless it has one.

    Raises:
        RelayConfigError: the file is missing or invalid (the engine is not built).
    """
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return
    from dispatch_plugins.webhooks.relay import Relay

    if any(isinstance(p, Relay) for p in engine.pm.get_plugins()):
        return  # an explicit relay wins
    relay = Relay.from_file(path)
    relay.dispatch_register_jobs(engine)
    engine.register_plugin(relay, name=PLUGIN_NAME)
