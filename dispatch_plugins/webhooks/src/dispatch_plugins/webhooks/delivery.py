"""One delivery attempt: resolve, check the addresses, connect to the checked one, POST.

The host is resolved once and every address it resolves to is checked (SSRF protection);
the request then goes to the checked address itself, with the endpoint's name in ``Host`` and
in TLS SNI (and certificate verification), so a DNS answer that changes between the check and
the connection (DNS rebinding) cannot redirect it. Each attempt uses its own client: no
connection is reused across endpoints or pinned addresses. Response bodies are never read.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from dispatch_plugins.webhooks.endpoints import Endpoint
from dispatch_plugins.webhooks.errors import AddressRefusedError, DeliveryError
from dispatch_plugins.webhooks.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

__all__ = ["Resolver", "system_resolver", "address_problem", "encode_body", "deliver", "USER_AGENT"]

#: ``resolver(host, port)`` returns the host's addresses (IP strings), best first.
Resolver = Callable[[str, int], Awaitable[list[str]]]

USER_AGENT = f"dispatch-webhooks/{importlib.metadata.version('dispatch-webhooks')}"


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with the system resolver (``getaddrinfo``), without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


def address_problem(address: str) -> str | None:
    """Why ``address`` may not be delivered to without ``allow_private``, or ``None``.

    Refused: private, loopback, link-local, multicast, reserved and unspecified addresses,
    anything else that is not globally routable (shared address space...), and IPv4 addresses
    embedded in IPv6 (mapped, 6to4, Teredo) that are themselves refused.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            inner = address_problem(str(embedded))
            if inner is not None:
                return f"{address} embeds {inner}"
    for label, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if flag:
            return f"{address} is {label}"
    if not ip.is_global:
        return f"{address} is not globally routable"
    return None


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Built once: loading the CA bundle for every attempt would be wasted work.
    return httpx.create_ssl_context()


def encode_body(envelope: Mapping[str, Any]) -> bytes:
    """The request body: the envelope as compact UTF-8 JSON."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


async def _pick_address(endpoint: Endpoint, host: str, port: int, resolver: Resolver) -> str:
    try:
        addresses = await resolver(host, port)
    except OSError as exc:
        raise DeliveryError(f"endpoint {endpoint.name!r}: cannot resolve {host!r}: {exc}") from None
    if not addresses:
        raise DeliveryError(f"endpoint {endpoint.name!r}: {host!r} resolves to no address")
    if not endpoint.allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise AddressRefusedError(
                    f"endpoint {endpoint.name!r}: refused to connect to {host}: {problem} "
                    "(set allow_private=True for an internal receiver)"
                )
    return addresses[0]


async def deliver(
    endpoint: Endpoint,
    envelope: Mapping[str, Any],
    *,
    timeout: float,
    connect_timeout: float,
    resolver: Resolver = system_resolver,
    ssl_context: ssl.SSLContext | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """POST ``envelope`` to ``endpoint``, signed; return the 2xx status.

    Args:
        endpoint: The receiver.
        envelope: The event envelope (``Event.envelope()``).
        timeout: Seconds the whole attempt may take (resolution, connection, request and
            response headers); also the read and write timeout.
        connect_timeout: Seconds the TCP (and TLS) connection may take.
        resolver: Resolves the endpoint's host.
        ssl_context: Verifies HTTPS receivers (default: httpx's CA bundle, certifi).
        clock: Unix time for the timestamp header.

    Raises:
        AddressRefusedError: the host resolves to a refused address; nothing was sent.
        DeliveryError: the attempt failed: a redirect (refused, never followed), a non-2xx
            status, a timeout or a connection error. The message never holds the body.
    """
    url = httpx.URL(endpoint.url)
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    body = encode_body(envelope)
    try:
        async with asyncio.timeout(timeout):
            address = await _pick_address(endpoint, host, port, resolver)
            stamp = int(clock())
            headers = {
                "Host": url.netloc.decode("ascii"),
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                ID_HEADER: str(envelope.get("id", "")),
                TIMESTAMP_HEADER: str(stamp),
                SIGNATURE_HEADER: sign(secret=endpoint.secrets, body=body, timestamp=stamp),
            }
            extensions: dict[str, Any] = {}
            if url.scheme == "https":
                extensions["sni_hostname"] = host
            async with (
                httpx.AsyncClient(
                    follow_redirects=False,
                    verify=ssl_context or _default_ssl_context(),
                    trust_env=False,  # no proxy from the environment: it would skip the pin
                    timeout=httpx.Timeout(timeout, connect=connect_timeout),
                ) as client,
                client.stream(
                    "POST",
                    url.copy_with(host=address),
                    content=body,
                    headers=headers,
                    extensions=extensions,
                ) as response,
            ):
                status = response.status_code  # the body is never read
    except TimeoutError:
        raise DeliveryError(f"endpoint {endpoint.name!r}: timed out after {timeout:g}s") from None
    except httpx.TimeoutException as exc:
        raise DeliveryError(
            f"endpoint {endpoint.name!r}: timed out ({type(exc).__name__})"
        ) from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"endpoint {endpoint.name!r}: {type(exc).__name__}: {exc}") from None
    if 300 <= status < 400:
        raise DeliveryError(f"endpoint {endpoint.name!r}: redirect refused (HTTP {status})")
    if not 200 <= status < 300:
        raise DeliveryError(f"endpoint {endpoint.name!r}: HTTP {status}")
    return status
