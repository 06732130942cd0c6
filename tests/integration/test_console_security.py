"""The console's sessions and CSRF protection, over HTTP (the browser tests show the pages).

Sessions are sealed cookies carrying the API token: these tests show they end when
they expire, when the token is revoked, and when they are tampered with; that the
cookie is Secure over https or with TOCSIN_CONSOLE_SECURE_COOKIES; and that no
state-changing request without the session's CSRF token, or from another origin, acts.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Running, ShiftedClock, StartTocsin
from tocsin.api import create_app
from tocsin.web.security import SESSION_SECONDS

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# Sessions are cookies and each request authenticates their token as the API does: the
# store makes no difference here, so one store is enough.
pytestmark = pytest.mark.parametrize("store_kind", ["sqlite"])


def console(tocsin: Running, base_url: str = "http://tocsin.test") -> httpx.AsyncClient:
    """A cookie-keeping client without the API token: a browser, as far as the server sees."""
    transport = httpx.ASGITransport(app=create_app(tocsin.runtime))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> httpx.Response:
    form = await client.get("/")
    return await client.post("/sign-in", data={"csrf": csrf_of(form), "token": token})


async def test_a_session_lasts_eight_hours_then_asks_to_sign_in_again(
    start_tocsin: StartTocsin,
) -> None:
    clock = ShiftedClock()
    tocsin = await start_tocsin(clock=clock)
    async with console(tocsin) as browser:
        signed = await sign_in(browser)
        assert signed.status_code == 303
        assert signed.headers["location"] == "/integrations"
        cookie = signed.headers["set-cookie"]
        assert f"Max-Age={SESSION_SECONDS}" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Secure" not in cookie  # plain http
        assert (await browser.get("/integrations")).status_code == 200
        clock.advance(SESSION_SECONDS - 60)
        assert (await browser.get("/integrations")).status_code == 200
        clock.advance(120)
        ended = await browser.get("/integrations")
        assert ended.status_code == 303
        assert ended.headers["location"] == "/?reason=signed-out"


async def test_revoking_the_token_ends_its_sessions(tocsin: Running) -> None:
    user = await tocsin.api.post(
        "/api/v1/users", json={"email": "ann@example.com", "name": "Ann", "role": "analyst"}
    )
    made = await tocsin.api.post("/api/v1/tokens", json={"user_id": user.json()["id"]})
    token = made.json()
    async with console(tocsin) as browser:
        assert (await sign_in(browser, token["token"])).status_code == 303
        assert (await browser.get("/integrations")).status_code == 200
        revoked = await tocsin.api.delete(f"/api/v1/tokens/{token['id']}")
        assert revoked.status_code == 204
        assert (await browser.get("/integrations")).status_code == 303


async def test_a_tampered_session_cookie_signs_nobody_in(tocsin: Running) -> None:
    async with console(tocsin) as browser:
        await sign_in(browser)
        sealed = browser.cookies["tocsin_session"]
        flipped = sealed[:40] + ("A" if sealed[40] != "A" else "B") + sealed[41:]
        browser.cookies.set("tocsin_session", flipped, domain="tocsin.test")
        assert (await browser.get("/integrations")).status_code == 303


async def test_a_deploy_token_cannot_sign_in(tocsin: Running) -> None:
    user = await tocsin.api.post(
        "/api/v1/users", json={"email": "sensor@example.com", "name": "Sensor", "role": "deploy"}
    )
    made = await tocsin.api.post("/api/v1/tokens", json={"user_id": user.json()["id"]})
    async with console(tocsin) as browser:
        refused = await sign_in(browser, made.json()["token"])
        assert refused.status_code == 200
        assert "the deploy role cannot read" in refused.text
        assert "tocsin_session" not in browser.cookies


async def test_cookies_are_secure_over_https(tocsin: Running) -> None:
    async with console(tocsin, "https://tocsin.test") as browser:
        signed = await sign_in(browser)
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith("__Host-tocsin_session=")
        assert "Secure" in cookie
        assert signed.headers["strict-transport-security"] == "max-age=31536000"


async def test_the_setting_makes_cookies_secure_over_http(start_tocsin: StartTocsin) -> None:
    tocsin = await start_tocsin(console_secure_cookies=True)
    async with console(tocsin) as browser:
        form = await browser.get("/")
        assert "Secure" in form.headers["set-cookie"]
        assert form.headers["set-cookie"].startswith("__Host-tocsin_sign_in=")


async def test_sign_in_needs_the_forms_csrf_token(tocsin: Running) -> None:
    async with console(tocsin) as browser:
        await browser.get("/")
        forged = await browser.post("/sign-in", data={"csrf": "guess", "token": ADMIN_TOKEN})
        assert forged.status_code == 403
        assert "tocsin_session" not in browser.cookies


async def test_a_post_from_another_origin_is_refused_even_with_the_token(tocsin: Running) -> None:
    async with console(tocsin) as browser:
        await sign_in(browser)
        page = await browser.get("/integrations")
        token = csrf_of(page)
        refused = await browser.post(
            "/sign-out", data={"csrf": token}, headers={"Origin": "http://evil.test"}
        )
        assert refused.status_code == 403
        assert (await browser.get("/integrations")).status_code == 200
        signed_out = await browser.post(
            "/sign-out", data={"csrf": token}, headers={"Origin": "http://tocsin.test"}
        )
        assert signed_out.status_code == 303
        assert (await browser.get("/integrations")).status_code == 303


async def test_console_errors_are_pages_not_json(tocsin: Running) -> None:
    async with console(tocsin) as browser:
        await sign_in(browser)
        response = await browser.post("/sign-out", content=b"\xff\xfe", headers={})
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("text/html")
        assert "the form could not be read" in response.text
