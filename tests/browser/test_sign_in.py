"""Signing in and out of the console in a real browser, and what it refuses."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Served, axe_check, screenshot, sign_in


def test_sign_in_with_the_admin_token_opens_the_console(page: Page) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    axe_check(page)
    screenshot(page, "sign-in")
    sign_in(page)
    expect(page.get_by_role("navigation", name="Sections")).to_be_visible()
    expect(page.get_by_text("administrator", exact=True)).to_be_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "tocsin_session"]
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert cookie["expires"] > 0  # a persistent cookie with an end, not a forever one
    assert not cookie["secure"]  # plain http on loopback; https or the setting turns it on


def test_a_bad_token_shows_an_error_on_the_form(page: Page) -> None:
    page.goto("/")
    page.get_by_label("API token").fill("tcs_not_a_real_token")
    page.get_by_role("button", name="Sign in").click()
    token = page.get_by_label("API token")
    expect(token).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#token-error")).to_have_text("This token is unknown, expired or revoked.")
    assert not [c for c in page.context.cookies() if c["name"] == "tocsin_session"]
    axe_check(page)


def test_sign_out_ends_the_session(page: Page) -> None:
    sign_in(page)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto("/integrations")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_forged_post_without_the_csrf_token_is_refused(page: Page, served: Served) -> None:
    sign_in(page)
    # The browser's own cookies go with it: only the missing form token can stop it.
    forged = page.request.post(f"{served.url}/sign-out", form={"anything": "x"})
    assert forged.status == 403
    assert "form token" in forged.text()
    page.goto("/integrations")
    expect(page.get_by_role("navigation", name="Sections")).to_be_visible()  # still signed in


def test_console_pages_forbid_framing_and_inline_script(page: Page) -> None:
    response = page.goto("/")
    assert response is not None
    headers = response.headers
    assert headers["x-frame-options"] == "DENY"
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
