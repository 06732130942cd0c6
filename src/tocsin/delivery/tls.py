"""TLS contexts per integration configuration, made once and reused."""

from __future__ import annotations

import ssl
from functools import lru_cache


@lru_cache(maxsize=1024)
def client_context(verify: bool, ca_certificate: str | None) -> ssl.SSLContext:
    """The context for a target: system CAs, only the integration's CA, or no verification.

    An integration's `ca_certificate` replaces the system CAs for that integration:
    a private receiver trusts its own CA and nothing else.
    """
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_certificate:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=ca_certificate)
        return context
    return ssl.create_default_context()
