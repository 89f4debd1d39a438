"""dispatch-redis: a durable Dispatch store in Redis.

Use it with a ``redis://`` URL (``rediss://`` for TLS, ``unix://`` for a socket), e.g.
``redis://:secret@cache.internal:6379/0?prefix=myapp``; the plugin registers the schemes
through the ``dispatch_core.plugins`` entry point.
"""

from __future__ import annotations

from dispatch_plugins.redis.store import RedisStore
from dispatch_plugins.redis.sync import RedisSyncStore
from dispatch_plugins.redis.url import RedisURL, parse_url

__all__ = ["RedisStore", "RedisSyncStore", "RedisURL", "parse_url"]
