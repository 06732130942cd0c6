"""A throwaway certificate authority for a local HTTPS receiver (`listen --tls`, `demo`)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import trustme


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateCA:
    """A server TLS context and the PEM of the CA that signed its certificate."""

    server: ssl.SSLContext
    ca_pem: str


def private_ca(*hosts: str) -> PrivateCA:
    """A new CA, and a certificate from it for these names and loopback."""
    authority = trustme.CA(organization_name="tocsin local receiver")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    names = dict.fromkeys([*hosts, "127.0.0.1", "localhost"])
    authority.issue_cert(*names).configure_cert(context)
    return PrivateCA(server=context, ca_pem=authority.cert_pem.bytes().decode())
