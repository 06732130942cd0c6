"""Users and tokens in the browser, and what a read_only user sees and may not do."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import Served, axe_check, screenshot, sign_in
from tests.conftest import MakeReceiver


def add_user(page: Page, email: str, name: str, role: str) -> None:
    page.goto("/users")
    form = page.locator("form[action='/users']")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Name").fill(name)
    form.get_by_label("Role").select_option(role)
    form.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("status")).to_contain_text("User added")


def create_token(page: Page, served: Served, email: str, name: str) -> str:
    form = page.locator("form[action='/tokens']")
    form.get_by_label("Holder").select_option(str(user_named(served, email)["id"]))
    form.get_by_label("Name (optional)").fill(name)
    form.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    assert secret.startswith("tcs_")
    return secret


def user_named(served: Served, email: str) -> dict[str, Any]:
    (found,) = [u for u in served.api.get("/api/v1/users").json() if u["email"] == email]
    user: dict[str, Any] = found
    return user


def test_add_a_user_change_the_role_create_and_revoke_a_token(admin: Page, served: Served) -> None:
    page = admin
    add_user(page, "ann@example.com", "Ann", "analyst")
    user = user_named(served, "ann@example.com")
    row = page.locator(f"#user-{user['id']}")
    expect(row).to_contain_text("Ann")
    row.get_by_label("Role of ann@example.com").select_option("api_developer")
    row.get_by_role("button", name="Change role").click()
    expect(page.get_by_role("status")).to_contain_text("Role changed")
    assert user_named(served, "ann@example.com")["role"] == "api_developer"

    secret = create_token(page, served, "ann@example.com", "laptop")
    expect(page.get_by_text("Shown this once")).to_be_visible()
    axe_check(page)
    screenshot(page, "users")
    assert served.api.get("/api/v1/users", headers={"Authorization": f"Bearer {secret}"}).is_success
    (token,) = [t for t in served.api.get("/api/v1/tokens").json() if t["name"] == "laptop"]
    token_row = page.locator(f"#token-{token['id']}")
    token_row.get_by_role("button", name=re.compile("Revoke")).click()
    token_row.get_by_role("button", name="Yes, revoke").click()
    expect(page.get_by_role("status")).to_contain_text("Token revoked")
    refused = served.api.get("/api/v1/users", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    page.goto("/users")
    expect(page.locator(f"#token-{token['id']}")).to_contain_text("revoked")

    page.locator(f"#user-{user['id']}").get_by_role("button", name=re.compile("Delete")).click()
    page.locator(f"#user-{user['id']}").get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("status")).to_contain_text("User deleted")
    assert not [u for u in served.api.get("/api/v1/users").json() if u["name"] == "Ann"]


def test_the_add_user_form_shows_errors_by_their_fields(admin: Page) -> None:
    page = admin
    page.goto("/users")
    form = page.locator("form[action='/users']")
    form.get_by_label("Email").fill("not-an-email")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator("#email-error")).to_contain_text("must be an email address")
    expect(page.locator("#name-error")).to_be_visible()
    expect(page.locator("form[action='/users']").get_by_label("Email")).to_have_value(
        "not-an-email"
    )
    axe_check(page)


def test_read_only_sees_masked_values_no_edit_controls_and_forced_posts_fail(
    admin: Page, browser: Browser, served: Served, make_receiver: MakeReceiver, ca_pem: str
) -> None:
    receiver = make_receiver()
    made = served.api.post(
        "/api/v1/integrations",
        json={
            "name": "Masked",
            "url": receiver.url + "/T000/B000/secretpath?key=abc",
            "ca_certificate": ca_pem,
            "headers": {"Authorization": "Bearer top-secret", "X-Team": "blue"},
        },
    ).json()
    add_user(admin, "rita@example.com", "Rita", "read_only")
    secret = create_token(admin, served, "rita@example.com", "rita")

    context = browser.new_context(base_url=served.url)
    page = context.new_page()
    sign_in(page, secret)
    expect(page.get_by_text("read_only", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Add integration")).to_have_count(0)
    row = page.locator(f"#integration-{made['id']}")
    expect(row).to_contain_text("https://127.0.0.1")
    expect(row).not_to_contain_text("secretpath")
    expect(row.get_by_role("button")).to_have_count(0)  # no disable, no delete
    expect(row.get_by_role("link", name="View")).to_be_visible()
    row.get_by_role("link", name="View").click()
    body = page.locator("main")
    expect(body).to_contain_text("Authorization: ***")
    expect(body).not_to_contain_text("top-secret")
    expect(body).not_to_contain_text("blue")
    expect(body).not_to_contain_text(made["signing_secret"])
    expect(page.locator("main form")).to_have_count(0)  # nothing to submit
    expect(page.get_by_role("button", name="Test saved integration")).to_have_count(0)
    axe_check(page)
    page.goto("/users")
    expect(page.get_by_role("button", name="Add user")).to_have_count(0)
    expect(page.get_by_role("button", name="Change role")).to_have_count(0)

    # Forced: the page's own CSRF token, a post the page did not offer.
    page.goto("/integrations")
    csrf = page.locator("form[action='/sign-out'] input[name='csrf']").get_attribute("value")
    assert csrf
    forced = page.request.post(
        f"{served.url}/integrations/{made['id']}/disable", form={"csrf": csrf}
    )
    assert forced.status == 403
    assert "read_only role cannot change configuration" in forced.text()
    assert served.api.get(f"/api/v1/integrations/{made['id']}").json()["enabled"]
    new_form = page.goto("/integrations/new")
    assert new_form is not None
    assert new_form.status == 403
    context.close()
