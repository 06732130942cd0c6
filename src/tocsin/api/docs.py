"""`GET /api/v1/docs`: Swagger UI from the package itself, so it works without internet.

FastAPI's default page loads Swagger UI from a CDN (blank offline, and a third party sees
every visit). The assets are swagger-ui-dist's, pinned by web/package-lock.json and
copied into docs_assets/ by `make vendor` (`make vendor-check` proves the copies). The
page's policy allows nothing from another origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "docs_assets"
PAGE = "/api/v1/docs"
AT = f"{PAGE}/assets"
# Swagger UI's page starts it with an inline script and styles elements inline.
_DIRECTIVES = (
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
)
_POLICY = "; ".join(_DIRECTIVES)


def install(app: FastAPI, openapi_url: str) -> None:
    """Serve the page and its assets; create the app with `docs_url=None`."""
    app.mount(AT, StaticFiles(directory=ASSETS), name="docs-assets")

    async def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title="tocsin API",
            swagger_js_url=f"{AT}/swagger-ui-bundle.js",
            swagger_css_url=f"{AT}/swagger-ui.css",
            swagger_favicon_url=f"{AT}/favicon-32x32.png",
            # No badge from Swagger's online validator: nothing leaves for another host.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = _POLICY
        return page

    app.add_api_route(PAGE, docs, methods=["GET"], include_in_schema=False)
