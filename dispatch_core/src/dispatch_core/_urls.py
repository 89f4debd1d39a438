"""Store URLs as they may be shown: in logs, errors and the CLI, never with a password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url"]

#: Query parameters that carry a secret (libpq's ``password`` and ``sslpassword``, Redis'
#: ``password``, tokens): their values are masked like the password of the user part.
_SECRET_PARAMS = ("password", "passwd", "pwd", "sslpassword", "secret", "token")
_SECRET_QUERY = re.compile(r"([?&;](?:" + "|".join(_SECRET_PARAMS) + r")=)[^&;#]*", re.IGNORECASE)
#: ``user:password@`` in a URL too broken for urlsplit.
_USERINFO = re.compile(r"(://[^:/@?#]*:)[^@/?#]*@")


def redact_url(url: str) -> str:
    """Hide the secrets of a store URL before printing it: the password of its user part and
    the values of ``password=``, ``sslpassword=``, ``token=``… query parameters."""
    masked = _SECRET_QUERY.sub(r"\1***", url)
    try:
        parts = urlsplit(masked)
        password = parts.password
    except ValueError:
        return _USERINFO.sub(r"\1***@", masked)
    if not password:
        return masked
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
