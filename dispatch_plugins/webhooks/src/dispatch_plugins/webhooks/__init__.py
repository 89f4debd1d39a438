"""dispatch-webhooks: signed webhooks for Dispatch job, workflow and cron events.

Give the engine a :class:`Relay` with your endpoints (or set ``DISPATCH_WEBHOOKS_CONFIG`` to a
JSON file of them) and run a worker on the ``webhooks`` queue::

    from dispatch_core import Engine
    from dispatch_plugins.webhooks import Endpoint, Relay

    relay = Relay([
        Endpoint(name="ops", url="https://ops.example.com/hooks", secret=OPS_SECRET),
        Endpoint(name="acme", url="https://acme.example/hooks", secret=ACME_SECRET,
                 events=["dispatch.job.*"], tenant="acme"),
    ])
    engine = Engine("postgresql://localhost/app", plugins=[relay])

Receivers check requests with :func:`verify_signature`. See ``docs/webhooks.md``.
"""

from __future__ import annotations

from dispatch_plugins.webhooks.catalog import CATALOG_VERSION, EVENT_TYPES
from dispatch_plugins.webhooks.delivery import USER_AGENT, address_problem
from dispatch_plugins.webhooks.endpoints import Endpoint, endpoints_from_config
from dispatch_plugins.webhooks.errors import (
    AddressRefusedError,
    DeliveryError,
    DeliveryRefusedError,
    RelayConfigError,
    RelayError,
    SignatureError,
    UnknownEndpointError,
)
from dispatch_plugins.webhooks.events import Event
from dispatch_plugins.webhooks.plugin import CONFIG_ENV
from dispatch_plugins.webhooks.relay import (
    DEFAULT_BACKOFF,
    DELIVER_JOB,
    Delivery,
    Relay,
    check_delivery,
)
from dispatch_plugins.webhooks.signing import (
    DEFAULT_TOLERANCE,
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify_signature,
)

__all__ = [
    # configuration
    "Relay",
    "Endpoint",
    "endpoints_from_config",
    "CONFIG_ENV",
    "DEFAULT_BACKOFF",
    # events
    "Event",
    "EVENT_TYPES",
    "CATALOG_VERSION",
    "Delivery",
    "DELIVER_JOB",
    "check_delivery",
    # signatures
    "sign",
    "verify_signature",
    "ID_HEADER",
    "TIMESTAMP_HEADER",
    "SIGNATURE_HEADER",
    "DEFAULT_TOLERANCE",
    "USER_AGENT",
    "address_problem",
    # errors
    "RelayError",
    "RelayConfigError",
    "DeliveryError",
    "AddressRefusedError",
    "DeliveryRefusedError",
    "UnknownEndpointError",
    "SignatureError",
]
