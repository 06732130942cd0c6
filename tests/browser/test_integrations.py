"""Integrations in the browser: create through the form, test inline, save, switch, delete.

Receivers are real HTTPS servers on loopback whose certificates come from a private CA
(trustme): the test message reaches one only when the form carries that CA.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Served, axe_check, screenshot
from tests.conftest import MakeReceiver


@pytest.fixture(scope="module")
def served(live: Served) -> Served:
    return live


def integration_named(served: Served, name: str) -> dict[str, Any]:
    found = [item for item in served.api.get("/api/v1/integrations").json() if item["name"] == name]
    assert len(found) == 1, found
    item: dict[str, Any] = found[0]
    return item


def test_create_a_webhook_with_headers_and_a_ca_testing_it_first(
    admin: Page, make_receiver: MakeReceiver, ca_pem: str, served: Served, tmp_path: Path
) -> None:
    receiver = make_receiver()
    page = admin
    axe_check(page)
    page.get_by_role("link", name="Add integration").click()
    expect(page.get_by_role("heading", name="Add a webhook integration")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("SIEM")
    page.get_by_label("Webhook URL").fill(receiver.url)
    page.get_by_text("Advanced settings").click()
    for number, (name, value) in enumerate(
        [("Authorization", "Bearer s3cret"), ("X-Team", "blue")]
    ):
        page.get_by_role("button", name="Add header").click()
        page.get_by_label("Header name").nth(number).fill(name)
        page.get_by_label("Value", exact=True).nth(number).fill(value)
    pem = tmp_path / "ca.pem"
    pem.write_text(ca_pem)
    page.get_by_label("Or upload a PEM file").set_input_files(pem)
    expect(page.get_by_label("CA certificate (PEM)")).to_have_value(ca_pem)
    page.get_by_label("Hits").check()
    axe_check(page)
    screenshot(page, "integration-form")

    page.get_by_role("button", name="Test integration").click()
    result = page.locator("#test-result")
    expect(result).to_contain_text("Test delivered: HTTP 200")
    expect(result).to_contain_text("ok")  # the receiver's response body
    screenshot(page, "integration-test-result")
    test_request = receiver.requests[-1]
    assert test_request.headers["Authorization"] == "Bearer s3cret"
    assert test_request.headers["X-Team"] == "blue"
    assert b"Test message" in test_request.body

    page.get_by_label("CA certificate (PEM)").fill("")
    page.get_by_role("button", name="Test integration").click()
    expect(result).to_contain_text("Test failed")
    expect(result.locator(".test-error")).to_contain_text("TLS verification failed for 127.0.0.1")
    expect(result.locator(".test-error")).to_contain_text("set ca_certificate to the CA")
    axe_check(page)

    page.get_by_label("CA certificate (PEM)").fill(ca_pem)
    page.get_by_role("button", name="Add integration").click()
    expect(page.get_by_text("Signing secret", exact=True)).to_be_visible()
    secret = page.locator("#signing-secret").inner_text()
    assert secret.startswith("whsec_")

    saved = integration_named(served, "SIEM")
    assert saved["headers"] == {"Authorization": "Bearer s3cret", "X-Team": "blue"}
    assert saved["ca_certificate"] == ca_pem
    assert saved["events"] == ["hit", "vuln"]
    assert saved["signing_secret"] == secret
    page.get_by_role("link", name="← Integrations").click()
    row = page.locator(f"#integration-{saved['id']}")
    expect(row).to_contain_text("SIEM")
    expect(row).to_contain_text("active")
    screenshot(page, "integrations")


def test_form_errors_show_next_to_their_fields_keeping_the_input(admin: Page) -> None:
    page = admin
    page.goto("/integrations/new")
    page.get_by_label("Name", exact=True).fill("Broken")
    page.get_by_label("Webhook URL").fill("ftp://files.example.com/drop")
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Request timeout (seconds)").fill("soon")
    page.get_by_label("CA certificate (PEM)").fill("not a certificate")
    page.get_by_role("button", name="Add integration").click()
    expect(page.locator("#url-error")).to_contain_text("must be an absolute URL")
    expect(page.locator("#request_timeout-error")).to_have_text("must be a number of seconds")
    expect(page.locator("#ca_certificate-error")).to_contain_text("not a PEM certificate")
    expect(page.get_by_label("Webhook URL")).to_have_value("ftp://files.example.com/drop")
    expect(page.get_by_label("Webhook URL")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Broken")
    expect(page.get_by_label("CA certificate (PEM)")).to_have_value("not a certificate")
    axe_check(page)


def test_a_target_the_deployment_refuses_is_an_error_on_the_url(admin: Page) -> None:
    page = admin
    page.goto("/integrations/new")
    page.get_by_label("Name", exact=True).fill("Metadata")
    page.get_by_label("Webhook URL").fill("https://169.254.169.254/latest")
    page.get_by_role("button", name="Add integration").click()
    expect(page.locator("#url-error")).to_contain_text("169.254.169.254")


def test_disable_enable_and_delete_with_confirmation(
    admin: Page, make_receiver: MakeReceiver, ca_pem: str, served: Served
) -> None:
    receiver = make_receiver()
    made = served.api.post(
        "/api/v1/integrations",
        json={"name": "Chat", "url": receiver.url, "ca_certificate": ca_pem},
    ).json()
    page = admin
    page.goto("/integrations")
    row = page.locator(f"#integration-{made['id']}")
    row.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status")).to_contain_text("disabled")
    expect(row).to_contain_text("disabled")
    assert integration_named(served, "Chat")["status"] == "disabled"
    row.get_by_role("button", name="Enable").click()
    expect(row).to_contain_text("active")
    assert integration_named(served, "Chat")["enabled"]

    row.get_by_role("button", name=re.compile("Delete")).click()
    expect(row.get_by_text("Delete Chat?")).to_be_visible()
    row.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("status")).to_contain_text("deleted")
    expect(page.locator(f"#integration-{made['id']}")).to_have_count(0)
    assert not [i for i in served.api.get("/api/v1/integrations").json() if i["name"] == "Chat"]


def test_edit_saves_and_rotating_shows_the_new_secret_once(
    admin: Page, make_receiver: MakeReceiver, ca_pem: str, served: Served
) -> None:
    receiver = make_receiver()
    made = served.api.post(
        "/api/v1/integrations",
        json={
            "name": "Edit me",
            "url": receiver.url,
            "ca_certificate": ca_pem,
            "headers": {"X-Old": "1"},
        },
    ).json()
    page = admin
    page.goto(f"/integrations/{made['id']}")
    expect(page.get_by_label("Header name")).to_have_value("X-Old")
    page.get_by_role("button", name="Remove header X-Old").click()
    page.get_by_label("Name", exact=True).fill("Edited")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_contain_text("Changes saved")
    saved = integration_named(served, "Edited")
    assert saved["headers"] == {}
    assert saved["ca_certificate"] == ca_pem  # untouched fields stay

    page.goto(f"/integrations/{made['id']}")
    expect(page.locator("#signing-secret")).to_have_count(0)  # shown once, not again
    page.get_by_role("button", name="Rotate signing secret").click()
    rotated = page.locator("#signing-secret").inner_text()
    assert rotated != made["signing_secret"]
    assert integration_named(served, "Edited")["signing_secret"] == rotated
