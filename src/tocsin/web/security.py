"""Console sessions, CSRF tokens and the headers every console response carries.

A session is a cookie sealed (encrypted and authenticated, Fernet) under a key derived
from the deployment's secret key: it holds the API token the person signed in with and
the session's CSRF token. Nothing is stored server-side, so every `tocsin serve` process
sharing the key accepts it; each request authenticates the token again, so revoking the
token, deleting its user or changing the role takes effect on the next click. A session
lasts SESSION_SECONDS from sign-in, whatever the activity.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import orjson
from cryptography.fernet import InvalidToken, MultiFernet
from starlette.requests import Request
from starlette.responses import Response

from tocsin.crypto import Vault

SESSION_SECONDS = 8 * 3600
SIGN_IN_SECONDS = 3600  # how long a sign-in form stays usable
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

# No inline script or style, nothing from another origin, no framing, forms post home only.
_POLICY = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
)
CONTENT_SECURITY_POLICY = "; ".join(_POLICY)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: the API token it acts with and its CSRF token."""

    token: str
    csrf: str


class Sessions:
    """Seals and opens the console's cookies."""

    def __init__(self, vault: Vault, *, secure: bool = False) -> None:
        self._cipher: MultiFernet = vault.derived("console-session")
        self._always_secure = secure

    def seal_session(self, token: str, now: float) -> tuple[str, Session]:
        session = Session(token=token, csrf=secrets.token_urlsafe(32))
        sealed = self._seal({"kind": "session", "token": token, "csrf": session.csrf}, now)
        return sealed, session

    def open_session(self, sealed: str | None, now: float) -> Session | None:
        found = self._open(sealed, now, SESSION_SECONDS)
        if found is None or found.get("kind") != "session":
            return None
        token, csrf = found.get("token"), found.get("csrf")
        if not isinstance(token, str) or not isinstance(csrf, str):
            return None
        return Session(token=token, csrf=csrf)

    def seal_sign_in(self, now: float) -> tuple[str, str]:
        """A cookie and the CSRF token of a sign-in form (there is no session yet)."""
        csrf = secrets.token_urlsafe(32)
        return self._seal({"kind": "sign_in", "csrf": csrf}, now), csrf

    def open_sign_in(self, sealed: str | None, now: float) -> str | None:
        found = self._open(sealed, now, SIGN_IN_SECONDS)
        if found is None or found.get("kind") != "sign_in":
            return None
        csrf = found.get("csrf")
        return csrf if isinstance(csrf, str) else None

    def _seal(self, content: dict[str, str], now: float) -> str:
        # Without base64's `=` padding the value needs no quoting in a Set-Cookie header.
        return self._cipher.encrypt_at_time(orjson.dumps(content), int(now)).decode().rstrip("=")

    def _open(self, sealed: str | None, now: float, ttl: int) -> dict[str, object] | None:
        if not sealed:
            return None
        try:
            padded = sealed + "=" * (-len(sealed) % 4)
            plain = self._cipher.decrypt_at_time(padded.encode(), ttl, int(now))
            content = orjson.loads(plain)
        except (InvalidToken, orjson.JSONDecodeError, UnicodeEncodeError):
            return None
        return content if isinstance(content, dict) else None

    # Cookies -------------------------------------------------------------------------

    def secure(self, request: Request) -> bool:
        return self._always_secure or request.url.scheme == "https"

    def session_cookie(self, request: Request) -> str:
        # `__Host-`: the browser keeps it only if Secure, for this host and path / alone.
        return "__Host-tocsin_session" if self.secure(request) else "tocsin_session"

    def sign_in_cookie(self, request: Request) -> str:
        return "__Host-tocsin_sign_in" if self.secure(request) else "tocsin_sign_in"

    def set_cookie(
        self, response: Response, request: Request, name: str, value: str, max_age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.secure(request),
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response, request: Request, name: str) -> None:
        response.delete_cookie(
            name, path="/", secure=self.secure(request), httponly=True, samesite="strict"
        )


def same_token(expected: str, given: str | None) -> bool:
    """Whether a form's or header's CSRF token is the session's (in constant time)."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


def same_origin(request: Request) -> bool:
    """A browser's Origin header, when it sends one, names this host.

    Browsers send Origin with every POST; its host must be the one the request was made
    to, whatever the scheme (TLS may end at a proxy in front).
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    _, _, origin_host = origin.partition("://")
    return bool(host) and hmac.compare_digest(origin_host.encode(), host.encode())


def protect(response: Response, request: Request) -> Response:
    """Add the console's security headers; pages are never cached, they may hold secrets."""
    response.headers.update(HEADERS)
    if request.url.scheme == "https":
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    response.headers.setdefault("Cache-Control", "no-store")
    return response
