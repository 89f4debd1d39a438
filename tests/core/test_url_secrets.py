"""Store URLs never show their secrets: not the user part's password, and not a password
given as a query parameter (``?password=``, libpq's ``sslpassword=``), in banners, log lines,
``repr(engine)`` or errors."""

from __future__ import annotations

import pytest

from dispatch_core import Engine
from dispatch_core._urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:s3cret@db:5432/app", "postgresql://bob:***@db:5432/app"),
        ("sqlite:///jobs.db", "sqlite:///jobs.db"),
        ("postgresql://bob@db/app?password=hunter2", "postgresql://bob@db/app?password=***"),
        (
            "postgresql://db/app?sslmode=require&PASSWORD=hunter2&schema=x",
            "postgresql://db/app?sslmode=require&PASSWORD=***&schema=x",
        ),
        ("postgresql://db/app?sslpassword=hunter2", "postgresql://db/app?sslpassword=***"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://cache/0?password=hunter2&prefix=d", "redis://cache/0?password=***&prefix=d"),
        (
            "https://ops.example.com/dispatch?token=hunter2",
            "https://ops.example.com/dispatch?token=***",
        ),
        # too broken for urlsplit (an invalid port): still masked
        ("postgresql://bob:hunter2@db:99999999999/app", "postgresql://bob:***@db:99999999999/app"),
    ],
)
def test_redact_url_masks_every_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)
    assert "s3cret" not in redact_url(url)


def test_engine_repr_and_safe_url_hide_a_query_password() -> None:
    engine = Engine("postgresql://bob@127.0.0.1:1/nowhere?password=hunter2")
    assert "hunter2" not in repr(engine)
    assert "hunter2" not in engine.safe_url
    assert "password=***" in engine.safe_url


def test_store_url_errors_hide_the_password() -> None:
    from dispatch_core import StoreURLError

    with pytest.raises(StoreURLError) as caught:
        Engine("nosuchstore://bob:hunter2@db/app?password=hunter2")
    assert "hunter2" not in str(caught.value)
    assert "nosuchstore" in str(caught.value)
