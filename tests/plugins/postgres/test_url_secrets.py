"""The values a URL error quotes are masked like the URL: a secret that ran into one (``;``
meant as a separator: ``?schema=x;password=...``) was printed as given, next to the masked URL.
"""

from __future__ import annotations

import pytest

from dispatch_core import Engine
from dispatch_core.errors import StoreURLError
from dispatch_plugins.postgres import PostgresStore

SECRET = "hunter2"


@pytest.mark.parametrize(
    "param",
    ["schema=A", "min_size=x", "statement_timeout=x", "worker_synchronous_commit=x"],
)
def test_a_secret_in_a_quoted_value_is_masked(param: str) -> None:
    url = f"postgresql://app@127.0.0.1:5432/app?{param};password={SECRET}"
    for make in (PostgresStore, Engine):
        with pytest.raises(StoreURLError) as info:
            make(url)
        message = str(info.value)
        assert SECRET not in message, message
        assert f"{param};password=***" in message, message
