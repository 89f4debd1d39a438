"""Secrets in a Redis store URL never reach a message: the store masks URLs with core's
``redact_url`` (as every store does), and the values it quotes in its errors too.

The store had its own masking, which knew only ``?password=`` and ``&password=`` in lower
case: ``?Password=``, ``;password=``, ``?token=`` and the like were printed as given.
"""

from __future__ import annotations

import pytest

from dispatch_core import Engine
from dispatch_core.errors import StoreURLError
from dispatch_plugins.redis import RedisStore

SECRET = "hunter2"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://127.0.0.1:6379/0?password={SECRET}",
        f"redis://127.0.0.1:6379/0?prefix=x&password={SECRET}",
        f"redis://127.0.0.1:6379/0?Password={SECRET}",
        f"redis://127.0.0.1:6379/0?PASSWORD={SECRET}&prefix=x",
        f"redis://127.0.0.1:6379/0?x=1;password={SECRET}",
        f"redis://127.0.0.1:6379/0?token={SECRET}",
        f"redis://127.0.0.1:6379/0?sslpassword={SECRET}",
        # Values the error quotes: ';' was meant as a separator, and the secret ran into them.
        f"redis://127.0.0.1:6379/0?prefix=a;password={SECRET}",
        f"redis://127.0.0.1:6379/0?socket_timeout=x;password={SECRET}",
        f"redis://127.0.0.1:6379/0?max_connections=x;password={SECRET}",
        f"redis://127.0.0.1:6379/0;password={SECRET}",
    ],
)
def test_a_password_in_the_query_is_masked_in_errors(url: str) -> None:
    for make in (RedisStore, Engine):
        with pytest.raises(StoreURLError) as info:
            make(url)
        message = str(info.value)
        assert SECRET not in message, message
        assert "***" in message, message  # masked, not dropped: the user can see where it was


def test_the_store_and_the_engine_never_show_the_password() -> None:
    url = f"redis://app:{SECRET}@127.0.0.1:6379/0?prefix=x"
    store = RedisStore(url)
    assert SECRET not in repr(store)
    assert SECRET not in repr(store.config)
    assert repr(store) == "RedisStore('app@127.0.0.1:6379/0', prefix='x')"
    engine = Engine(url)
    assert SECRET not in repr(engine)
    assert SECRET not in engine.safe_url
    assert engine.safe_url == "redis://app:***@127.0.0.1:6379/0?prefix=x"
