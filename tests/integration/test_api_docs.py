"""/api/v1/docs loads Swagger UI from this server, not from a CDN (issue 17)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Running
from tocsin.api.docs import ASSETS

pytestmark = pytest.mark.parametrize("store_kind", ["sqlite"])  # no store involved


async def test_the_docs_page_loads_every_script_and_stylesheet_from_this_server(
    tocsin: Running,
) -> None:
    page = await tocsin.api.get("/api/v1/docs", headers={"Authorization": ""})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(urls) == 3, urls  # stylesheet, favicon, Swagger UI's bundle
    assert all(url.startswith("/api/v1/docs/assets/") for url in urls), urls
    assert "://" not in page.text  # no absolute URL anywhere, the validator's neither
    for url in urls:
        asset = await tocsin.api.get(url, headers={"Authorization": ""})
        assert asset.status_code == 200, url
        assert asset.content == (ASSETS / url.rsplit("/", 1)[1]).read_bytes()
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_the_assets_are_swagger_ui_with_its_licence(tocsin: Running) -> None:
    bundle = await tocsin.api.get("/api/v1/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    assert "Apache License" in (ASSETS / "LICENSE").read_text()
