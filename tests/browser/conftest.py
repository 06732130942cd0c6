"""Browser tests: Playwright driving Debian's Chromium against a real `tocsin serve`.

Each test module gets its own tocsin on a SQLite file in a temporary folder, loopback
targets allowed: `served` is a `tocsin serve` subprocess; a module that needs to move
time forward (retries that last hours) overrides it with `live`, the same app under
uvicorn on a thread of this process with a ShiftedClock. Each test gets a fresh
browser context. Debian's
/usr/bin/chromium is required: `make test` installs it; without it these tests fail,
they do not skip. axe-core comes from web/node_modules (npm ci, pinned by
web/package-lock.json); `axe_check` runs it on the page shown and fails on any
violation of impact serious or critical. Every test also fails if the page logged a
Content-Security-Policy violation: the console must work under its own policy.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.conftest import ADMIN_TOKEN, ShiftedClock, make_settings
from tocsin.api import create_app
from tocsin.crypto import Vault
from tocsin.service import Tocsin
from tocsin.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
TOCSIN = Path(sys.executable).with_name("tocsin")
BLOCKING_IMPACTS = ("serious", "critical")


@dataclass(frozen=True)
class Served:
    """A running tocsin: its console's address and an API client as the admin."""

    url: str
    api: httpx.Client
    log: Path | None = None
    clock: ShiftedClock | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("serve")
    port = _free_port()
    env = os.environ | {
        "TOCSIN_DATABASE_URL": f"sqlite:///{folder / 'tocsin.db'}",
        "TOCSIN_PORT": str(port),
        "TOCSIN_ADMIN_TOKEN": ADMIN_TOKEN,
        "TOCSIN_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TOCSIN_CLIENT_NAME": "TestCompany",
        "TOCSIN_SQLITE_SYNCHRONOUS": "NORMAL",
    }
    log = folder / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [TOCSIN, "serve"], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ) as api:
            _wait_ready(process, api, log)
            yield Served(url=url, api=api, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """tocsin under uvicorn on a thread of this process, its clock moved by the test."""
    folder = tmp_path_factory.mktemp("live")
    port = _free_port()
    clock = ShiftedClock()
    settings = make_settings(folder, port=port, console_url=f"http://127.0.0.1:{port}")
    vault = Vault([Vault.generate_key()])
    store = SqliteStore(
        folder / "tocsin.db", vault=vault, synchronous="NORMAL", max_batch=settings.max_batch
    )
    runtime = Tocsin(settings, store, vault=vault, clock=clock)
    config = uvicorn.Config(
        create_app(runtime, manage_lifecycle=True),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="tocsin", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ) as api:
            deadline = time.monotonic() + 30
            while not server.started:
                assert thread.is_alive(), "tocsin did not start"
                assert time.monotonic() < deadline, "tocsin did not start within 30 s"
                time.sleep(0.05)
            yield Served(url=url, api=api, clock=clock)
    finally:
        server.should_exit = True
        thread.join(30)


def _wait_ready(process: subprocess.Popen[bytes], api: httpx.Client, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"tocsin serve exited:\n{log.read_text()}"
        with contextlib.suppress(httpx.TransportError):
            if api.get("/readyz").status_code == 200:
                return
        time.sleep(0.05)
    pytest.fail(f"tocsin serve did not become ready:\n{log.read_text()}")


# Module scope: Playwright's sync API keeps an event loop running in this thread while it
# is open, and the asyncio tests of other modules need the thread without one.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
            "(apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser, served: Served) -> Iterator[BrowserContext]:
    made = browser.new_context(base_url=served.url, viewport={"width": 1280, "height": 900})
    made.set_default_timeout(15_000)
    yield made
    made.close()


class CspWatch:
    """Console messages that report a Content-Security-Policy violation."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def __call__(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    opened = context.new_page()
    watch = CspWatch()
    opened.on("console", watch)
    yield opened
    assert not watch.violations, watch.violations


def sign_in(page: Page, token: str = ADMIN_TOKEN) -> None:
    page.goto("/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/integrations")


@pytest.fixture
def admin(page: Page) -> Page:
    """A page signed in as the administrator."""
    sign_in(page)
    return page


def axe_check(page: Page) -> None:
    """Run axe-core on the page: no violation of impact serious or critical."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make test` runs `npm ci` in web/")
    # Evaluated through the DevTools protocol, which the page's CSP does not govern;
    # a <script> tag would be refused by the policy the console sends.
    page.evaluate(AXE.read_text() + "\n;undefined")
    found: dict[str, Any] = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => ({violations: r.violations.map(v => ({id: v.id, impact: v.impact,"
        " help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))}))"
    )
    blocking = [v for v in found["violations"] if v["impact"] in BLOCKING_IMPACTS]
    assert not blocking, f"axe-core on {page.url}: {blocking}"


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    """Save what the page shows to docs/screenshots/<name>.png (shown in the README)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=full_page)
