"""Shared fixtures. Service-backed tests skip locally when a service is missing but fail in CI
(``DISPATCH_TEST_REQUIRE_SERVICES=1``)."""

from __future__ import annotations

import os

import pytest

# Tests must not pick up a developer's configuration.
for _name in list(os.environ):
    if _name.startswith("DISPATCH_") and not _name.startswith("DISPATCH_TEST_"):
        del os.environ[_name]


def require_service(what: str) -> None:
    """Skip the calling test because ``what`` is unavailable, or fail when CI requires it."""
    if os.environ.get("DISPATCH_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required in CI (DISPATCH_TEST_REQUIRE_SERVICES=1) but unavailable")
    pytest.skip(f"{what} unavailable")


@pytest.fixture(name="require_service")
def _require_service_fixture():  # type: ignore[no-untyped-def]
    """The :func:`require_service` function, for conftest files and tests in subfolders."""
    return require_service
