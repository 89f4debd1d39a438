"""The module dispatch-core loads from the ``otel`` entry point: a default :class:`OTel`
bound to the global tracer and meter providers, so installing dispatch-otel is enough.

Without an OpenTelemetry SDK configured the global providers are the API's no-op ones and
the plugin costs next to nothing; configure the SDK (before or after this import) and the
spans and measurements flow. ``DISPATCH_OTEL_DISABLED=1`` (read when this module is first
imported) leaves the module without hooks. An :class:`OTel` passed to an engine's
``plugins=`` replaces this default for that engine.
"""

from __future__ import annotations

import os

from dispatch_plugins.otel._otel import OTel

__all__ = ["DEFAULT", "disabled"]


def disabled() -> bool:
    """Whether ``DISPATCH_OTEL_DISABLED`` asks to turn the default instance off."""
    value = os.environ.get("DISPATCH_OTEL_DISABLED", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


#: The default instance, or ``None`` when disabled.
DEFAULT: OTel | None = None if disabled() else OTel()

if DEFAULT is not None:
    # pluggy registers the hook implementations it finds on the module.
    globals().update(DEFAULT.hook_functions())
