"""The live status page in a real browser (issue 14): headless Chromium (Debian's ``chromium``, driven by Playwright
with its executable path set) against a running devnet. The page shows every park and the relay chain; a transfer
started from the page (after entering the admin token) moves through its four phases on screen and its timeline
shows them; a frozen light client shows as frozen. Screenshots are saved as test artifacts
(``$PARKRELAY_ARTIFACTS`` or ``var/test-artifacts``, ``status-page-*.png``), at a laptop's and a phone's width.

One devnet for the module (:mod:`tests.integration.operator_devnet`); the relayer is stopped while the transfer is
sent so that the packet is seen committed on screen before it moves.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api

from tests.integration.operator_devnet import (
    PARK_A,
    PARK_B,
    RELAY,
    USER,
    OperatorNet,
    freeze_dpos_client,
    operator_devnet,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("PARKRELAY_ARTIFACTS", Path(__file__).resolve().parents[2] / "var" / "test-artifacts"))
ORDER = ["committed", "verified", "executed", "acked", "completed"]

if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (make setup installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorNet]:
    with operator_devnet(tmp_path_factory.mktemp("operator-page")) as n:
        n.ready()
        yield n


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, net: OperatorNet) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(net.validator_api + "/")
    pg.wait_for_selector("[data-testid=live]:has-text('live')", timeout=15_000)
    yield pg
    ctx.close()
    assert not errors, f"the page raised: {errors}"


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"status-page-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_the_page_shows_every_park_and_the_relay_chain(page: Any, net: OperatorNet) -> None:
    for chain in (PARK_A, PARK_B, RELAY):
        node = page.locator(f"[data-testid=park-{chain}]")
        node.wait_for(timeout=10_000)
        assert node.get_attribute("data-reachable") == "true"
    for chain in (PARK_A, PARK_B):
        assert page.locator(f"[data-testid=park-{chain}]").get_attribute("data-client-status") == "active"
        assert page.locator(f"[data-testid=client-row-{chain}]").get_attribute("data-status") == "active"
    assert page.locator("[data-testid=lane-lane-0]").count() == 1
    assert page.locator("[data-testid=relayers] tr").count() == 1
    assert shot(page, "overview").stat().st_size > 10_000


def test_a_transfer_started_from_the_page_moves_through_its_four_phases(page: Any, net: OperatorNet) -> None:
    net.stop_relayer("relayer-a")  # the packet waits, committed, until a relayer carries it
    try:
        page.fill("#token", net.token)
        page.select_option("#from_chain", PARK_A)
        page.fill("#sender", USER[PARK_A])
        page.select_option("#to_chain", PARK_B)
        page.fill("#receiver", USER[PARK_B])
        page.fill("#amount_wh", "4321")
        # record every state the packet's row shows, as the page redraws it
        page.evaluate("""() => { window.__seen = []; new MutationObserver(() => {
            document.querySelectorAll('tr[data-key]').forEach(tr => {
              const s = tr.dataset.state, k = tr.dataset.key, seen = window.__seen;
              if (!seen.length || seen[seen.length - 1][1] !== s || seen[seen.length - 1][0] !== k) seen.push([k, s]);
            }); }).observe(document.getElementById('packets'), {childList: true, subtree: true}); }""")
        page.click("form#transfer button[type=submit]")
        page.wait_for_selector("[data-testid=transfer-result]:has-text('sent')", timeout=60_000)
        key = page.locator("[data-testid=transfer-result]").get_attribute("data-packet")
        assert key and key.startswith(f"{PARK_A}/{PARK_B}/")
        row = page.locator(f"[data-testid='packet-{key}']")
        row.wait_for(timeout=15_000)
        assert row.get_attribute("data-state") == "committed"
        page.locator(f"[data-testid='dot-{key}']").wait_for(timeout=5_000)  # a dot on its lane, in flight
        shot(page, "committed")
    finally:
        net.start_relayer("relayer-a")
    page.wait_for_selector(f"[data-testid='packet-{key}'][data-state=completed]", timeout=90_000)
    seen = [s for k, s in page.evaluate("window.__seen") if k == key]
    assert seen[0] == "committed" and seen[-1] == "completed", seen
    assert [ORDER.index(s) for s in seen] == sorted(ORDER.index(s) for s in seen), f"states out of order: {seen}"
    assert page.locator(f"[data-testid='dot-{key}']").count() == 0  # settled: no longer in flight
    # its timeline, on the click that shows it: all four phases with their heights
    row.click()
    page.wait_for_selector(f"[data-testid=timeline][data-packet='{key}'][data-state=completed]", timeout=10_000)
    steps = page.locator("[data-testid=timeline] li")
    assert [steps.nth(i).get_attribute("data-phase") for i in range(steps.count())] == [
        "commit", "verify", "execute", "confirm", "settle"]
    assert all(steps.nth(i).get_attribute("data-done") == "true" for i in range(steps.count()))
    assert "height" in steps.nth(2).inner_text()
    shot(page, "completed")


def test_a_wrong_token_is_refused_on_the_page(page: Any, net: OperatorNet) -> None:
    page.fill("#token", "00" * 32)
    page.select_option("#from_chain", PARK_A)
    page.fill("#sender", USER[PARK_A])
    page.select_option("#to_chain", PARK_B)
    page.fill("#receiver", USER[PARK_B])
    page.fill("#amount_wh", "1")
    page.click("form#transfer button[type=submit]")
    page.wait_for_selector("[data-testid=transfer-result]:has-text('rpc.unauthorized')", timeout=10_000)


def test_a_phone_sized_screen_shows_the_page(browser: Any, net: OperatorNet) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, device_scale_factor=2)
    pg = ctx.new_page()
    try:
        pg.goto(net.validator_api + "/")
        pg.wait_for_selector(f"[data-testid=park-{PARK_B}]", timeout=15_000)
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"the page scrolls sideways on a phone: {width}px"
        shot(pg, "phone")
    finally:
        ctx.close()


def test_a_frozen_client_shows_as_frozen(page: Any, net: OperatorNet) -> None:
    """Last: it freezes the relay's client of park-b for good."""
    freeze_dpos_client(net, PARK_B)
    page.wait_for_selector(f"[data-testid=park-{PARK_B}][data-client-status=frozen]", timeout=30_000)
    assert page.locator(f"[data-testid=client-row-{PARK_B}]").get_attribute("data-status") == "frozen"
    assert "frozen" in (page.locator(f"[data-testid=client-{PARK_B}]").text_content() or "")
    assert page.locator(f"[data-testid=park-{PARK_A}]").get_attribute("data-client-status") == "active"
    # the freeze paused the park's lanes: the edge says so
    page.wait_for_selector("[data-testid=lane-label-lane-0]:has-text('paused')", timeout=10_000)
    shot(page, "frozen")
