"""The errors dispatch-webhooks raises."""

from __future__ import annotations

from dispatch_core import ConfigurationError, DispatchError

__all__ = [
    "RelayError",
    "RelayConfigError",
    "DeliveryError",
    "AddressRefusedError",
    "UnknownEndpointError",
    "DeliveryRefusedError",
    "SignatureError",
]


class RelayError(DispatchError):
    """Base class of the errors of dispatch-webhooks."""


class RelayConfigError(RelayError, ConfigurationError, ValueError):
    """An endpoint or the relay configuration is invalid; the message names the endpoint
    and the field."""


class DeliveryError(RelayError):
    """One delivery attempt failed (a non-2xx status, a redirect, a timeout, a connection
    error); the delivery job retries it. The message gives the status, never the body."""


class AddressRefusedError(DeliveryError):
    """The endpoint's host resolves to a private, loopback, link-local, multicast, reserved
    or unspecified address and the endpoint does not set ``allow_private``. Nothing was sent;
    the delivery fails for good (no retry)."""


class UnknownEndpointError(DeliveryError):
    """A delivery job names an endpoint this worker's relay does not configure. The attempt
    fails and is retried (a worker with the endpoint, or a redeployed one, may take it)."""


class DeliveryRefusedError(DeliveryError):
    """A delivery job does not hold a real event for its endpoint: its tenant is not the
    endpoint's, the event's tenant is not one the endpoint may receive, or the event's type is
    outside the endpoint's filter. ``check`` names the check that failed (``"tenant"``,
    ``"event tenant"``, ``"event type"``). Nothing was signed or sent; the delivery fails for
    good (no retry)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"delivery refused by the {check} check: {message}")
        self.check = check


class SignatureError(ValueError):
    """A webhook request failed verification; ``str(error)`` says why (a missing header, a
    stale timestamp, a signature mismatch)."""
