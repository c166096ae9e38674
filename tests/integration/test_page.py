"""The web page in a real browser (Debian's chromium driven by Playwright).

A scripted model asks for three tools in one turn. Each reports progress and then waits on an
event the test sets, so the test decides what the page must show at each moment: all three
rows running at once with their progress, then each one finishing (two green, one red), the
answer streaming in, and the thread's history coming back when it is chosen again.
Screenshots go to the test's tmp dir (``running.png``, ``finished.png``, ``history.png``).
"""

from __future__ import annotations

import asyncio
import re
import threading

import httpx
import pytest
from langchain_core.tools import tool
from playwright.sync_api import Page, expect, sync_playwright

from agent_ng.service.app import create_app
from agent_ng.service.settings import ServiceSettings
from agent_ng.tools import progress
from tests.helpers.live_server import serving
from tests.helpers.scripted_model import Reply, ScriptedModel, calls
from tests.helpers.system import need

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GUARD_S = 10
GUARD_MS = GUARD_S * 1000
QUESTION = "fetch the report, index the archive and ping the mirror"
SECONDS = re.compile(r"^\d+\.\d+s$")
ANSWER = "The report has 4 parts and the archive 120 files; the mirror did not answer."


def gated_tools(go: dict[str, threading.Event]):
    @tool
    def fetch_report(url: str) -> str:
        """Download a report in parts."""
        progress.report(0.25, "part 1 of 4")
        assert go["fetch_report"].wait(GUARD_S)
        progress.report(1.0, "part 4 of 4")
        return "4 parts"

    @tool
    def index_archive(path: str) -> str:
        """Index the files of an archive."""
        progress.report(0.6, "72 of 120 files")
        assert go["index_archive"].wait(GUARD_S)
        return "120 files"

    @tool
    def ping_mirror(host: str) -> str:
        """Check that a mirror answers."""
        progress.report(None, "waiting for an answer")
        assert go["ping_mirror"].wait(GUARD_S)
        raise ConnectionError(f"{host} did not answer")

    return [fetch_report, index_archive, ping_mirror]


def row(page: Page, name: str):
    return page.locator(".tool-row", has=page.locator(".name", has_text=name))


@pytest.fixture(scope="module")
def browser():
    need("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    page.close()
    assert errors == [], f"the page raised: {errors}"


def test_parallel_tools_progress_and_finish_live_and_the_thread_reloads(browser_page, tmp_path):
    page = browser_page
    go = {name: threading.Event() for name in ("fetch_report", "index_archive", "ping_mirror")}
    model = ScriptedModel(
        replies=[
            calls(
                ("fetch_report", {"url": "https://example.org/report"}),
                ("index_archive", {"path": "/data/archive.tar"}),
                ("ping_mirror", {"host": "mirror.example.org"}),
            ),
            Reply(text=ANSWER),
        ]
    )
    settings = ServiceSettings(checkpoint_url="memory://", cache_url="memory://", system_prompt="", api_key=None)
    try:
        with serving(create_app(settings, model=model, tools=gated_tools(go))) as url:
            page.goto(url)
            thread_id = page.locator("#thread-id").inner_text()
            page.fill("#question", QUESTION)
            page.keyboard.press("Enter")

            running = page.locator('.tool-row[data-state="running"]')
            expect(running).to_have_count(3, timeout=GUARD_MS)
            expect(row(page, "fetch_report").locator(".bar")).to_have_attribute(
                "aria-valuenow", "25", timeout=GUARD_MS
            )
            expect(row(page, "index_archive").locator(".bar")).to_have_attribute(
                "aria-valuenow", "60", timeout=GUARD_MS
            )
            expect(row(page, "ping_mirror").locator(".bar")).to_have_class("bar indeterminate")
            expect(row(page, "index_archive").locator(".note")).to_have_text("72 of 120 files")
            expect(row(page, "fetch_report").locator(".args")).to_have_text(
                '(url="https://example.org/report")'
            )
            expect(row(page, "fetch_report").locator(".eta")).to_contain_text("ETA")
            expect(row(page, "fetch_report").locator(".elapsed")).to_have_text(SECONDS)
            expect(page.locator(".tools-head .parallel")).to_have_text("3 running now")
            expect(page.locator(".timeline .span")).to_have_count(3)
            page.screenshot(path=tmp_path / "running.png")

            for name, state in [
                ("index_archive", "done"),
                ("fetch_report", "done"),
                ("ping_mirror", "error"),
            ]:
                go[name].set()
                expect(row(page, name)).to_have_attribute("data-state", state, timeout=GUARD_MS)
            expect(row(page, "fetch_report").locator(".bar")).to_have_attribute(
                "aria-valuenow", "100"
            )
            expect(row(page, "ping_mirror").locator(".note")).to_contain_text(
                "mirror.example.org did not answer"
            )
            expect(page.locator(".answer")).to_have_text(ANSWER, timeout=GUARD_MS)
            expect(page.locator("#status")).to_have_text("done", timeout=GUARD_MS)
            expect(page.locator(".tools-head .parallel")).to_have_text("up to 3 ran at once")
            expect(page.locator('.timeline .span[data-state="error"]')).to_have_count(1)
            page.screenshot(path=tmp_path / "finished.png")

            page.click("#new-thread")
            expect(page.locator(".turn")).to_have_count(0)
            expect(page.locator("#thread-id")).not_to_have_text(thread_id)
            page.locator(f'#threads li[data-thread-id="{thread_id}"] button').click()
            expect(page.locator(".question")).to_have_text(QUESTION, timeout=GUARD_MS)
            expect(page.locator('.tool-row[data-state="done"]')).to_have_count(2)
            expect(page.locator('.tool-row[data-state="error"]')).to_have_count(1)
            expect(page.locator(".answer")).to_have_text(ANSWER)
            page.screenshot(path=tmp_path / "history.png")
    finally:
        for event in go.values():
            event.set()

    assert (tmp_path / "running.png").stat().st_size > 0


def test_the_page_asks_for_the_api_key_and_stop_cancels_the_run(browser_page, tmp_path):
    page = browser_page

    @tool
    async def wait_forever(reason: str) -> str:
        """Runs until cancelled."""
        await asyncio.Event().wait()

    model = ScriptedModel(
        replies=[calls(("wait_forever", {"reason": "demo"})), Reply(text="Still here.")]
    )
    settings = ServiceSettings(checkpoint_url="memory://", cache_url="memory://", system_prompt="", api_key="s3cret")
    with serving(create_app(settings, model=model, tools=[wait_forever])) as url:
        page.goto(url)
        expect(page.locator("#key-form")).to_be_visible(timeout=GUARD_MS)
        page.fill("#api-key", "s3cret")
        page.click("#key-form button")
        expect(page.locator("#key-form")).to_be_hidden()
        thread_id = page.locator("#thread-id").inner_text()

        page.fill("#question", "wait for me")
        page.click("#send")
        expect(row(page, "wait_forever")).to_have_attribute(
            "data-state", "running", timeout=GUARD_MS
        )
        page.click("#stop")
        expect(page.locator("#status")).to_have_text("stopped", timeout=GUARD_MS)
        expect(row(page, "wait_forever")).to_have_attribute("data-state", "error")
        expect(page.locator(".run-note")).to_have_text("Run ended: cancelled")

        # the next question on the thread runs once the stopped run is settled
        page.fill("#question", "are you there?")
        page.click("#send")
        expect(page.locator(".answer")).to_have_text("Still here.", timeout=GUARD_MS)
        page.click("#new-thread")
        page.locator(f'#threads li[data-thread-id="{thread_id}"] button').click()
        expect(page.locator(".turn")).to_have_count(2, timeout=GUARD_MS)
        expect(row(page, "wait_forever")).to_have_attribute("data-state", "error")
        expect(row(page, "wait_forever").locator(".note")).to_contain_text("cancelled")
        page.screenshot(path=tmp_path / "stopped.png")
        headers = {"Authorization": "Bearer s3cret"}
        thread = httpx.get(f"{url}/threads/{thread_id}", headers=headers, timeout=GUARD_S).json()

    roles = [m["role"] for m in thread["messages"]]
    assert roles == ["user", "assistant", "tool", "user", "assistant"]
    assert thread["messages"][2]["status"] == "error"
