"""/api/v1/docs in a real browser with every other host unreachable: Swagger UI renders
the API from this server alone (issue 17: it was blank without internet)."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import Served


def test_the_api_docs_render_offline(page: Page, served: Served) -> None:
    home = urlsplit(served.url).netloc
    elsewhere: list[str] = []

    def offline(route: Route) -> None:
        if urlsplit(route.request.url).netloc == home:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", offline)
    page.goto("/api/v1/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("tocsin")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/hits").first).to_be_visible()
    assert elsewhere == []
