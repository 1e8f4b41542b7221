"""The chat widget (chat/static/chat.js) in headless Chromium: a message typed on one page
appears on another; an over-long one is answered with the server's error; after a server
restart the widget reconnects with exponential backoff and jitter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.responses import HTMLResponse

from castway.settings import Settings
from chat.app import create_chat_app
from chat.widget import widget_html, with_chat
from tests.chat.conftest import serve
from tests.origin.browser import Page, launch_browser
from tests.support import free_port

pytestmark = [pytest.mark.peer, pytest.mark.slow]

CONNECTED = """
new Promise((resolve, reject) => {
  const started = Date.now();
  const check = () => {
    const chat = (window.castwayChat || [])[0];
    if (chat && chat.connected) { resolve(chat.channel); return; }
    if (Date.now() - started > 15000) { reject(new Error("chat did not connect")); return; }
    setTimeout(check, 20);
  };
  check();
})
"""

TYPE_AND_SEND = """
(() => {
  const root = document.querySelector("[data-castway-chat]");
  root.querySelector(".castway-chat-nick").value = %(nick)s;
  root.querySelector(".castway-chat-input").value = %(text)s;
  root.querySelector(".castway-chat-send").click();
  return true;
})()
"""

SHOWN = """
new Promise((resolve, reject) => {
  const started = Date.now();
  const check = () => {
    const items = [...document.querySelectorAll(".castway-chat-message")];
    const found = items.find(li => li.textContent.includes(%(text)s));
    if (found) { resolve(found.textContent); return; }
    if (Date.now() - started > 15000) {
      reject(new Error("not shown: " + items.map(li => li.textContent).join("|")));
      return;
    }
    setTimeout(check, 20);
  };
  check();
})
"""

ERROR_SHOWN = """
new Promise((resolve, reject) => {
  const chat = window.castwayChat[0];
  const started = Date.now();
  const check = () => {
    if (chat.errors.length) {
      resolve({code: chat.errors[0].code,
               status: document.querySelector(".castway-chat-status").textContent,
               connected: chat.connected});
      return;
    }
    if (Date.now() - started > 15000) { reject(new Error("no error frame")); return; }
    setTimeout(check, 20);
  };
  check();
})
"""


def _page_app() -> FastAPI:
    app = create_chat_app(Settings(redis_url=None, chat_redis_urls=None))

    @app.get("/watch/{channel}")
    async def watch(channel: str) -> HTMLResponse:  # what the origin's watch page adds
        return HTMLResponse(f"<!doctype html><html><head><meta charset=utf-8></head><body>"
                            f"{with_chat('<video id=video></video>', channel)}</body></html>")

    return app


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with serve(_page_app()) as url:
        yield url


async def _open(page: Page, url: str) -> None:
    await page.goto(url)
    assert await page.evaluate(CONNECTED, await_promise=True, timeout_s=30) == "demo"


async def test_a_message_sent_on_one_watch_page_shows_on_another(base: str,
                                                                  tmp_path: Path) -> None:
    async with launch_browser(tmp_path) as browser:
        sender, viewer = await browser.new_page(), await browser.new_page()
        await _open(sender, f"{base}/watch/demo")
        await _open(viewer, f"{base}/watch/demo")
        await sender.evaluate(TYPE_AND_SEND % {"nick": '"yuki"', "text": '"こんにちは chat"'})
        shown = await viewer.evaluate(SHOWN % {"text": '"こんにちは chat"'},
                                      await_promise=True, timeout_s=30)
        assert shown == "yukiこんにちは chat"
        # A page opened later gets it from the history.
        late = await browser.new_page()
        await _open(late, f"{base}/watch/demo")
        assert await late.evaluate(SHOWN % {"text": '"こんにちは chat"'},
                                   await_promise=True, timeout_s=30)
        # The input stops at 100 characters; a script sending more gets the error frame.
        await sender.evaluate("window.castwayChat[0].send('x'.repeat(101))")
        error = await sender.evaluate(ERROR_SHOWN, await_promise=True, timeout_s=30)
        assert error["code"] == "too_long"
        assert error["status"].startswith("messages are limited to 100 characters")
        assert error["connected"] is True
        for page in (sender, viewer, late):
            assert not page.errors, page.errors


REJOINED = """
new Promise((resolve, reject) => {
  const chat = window.castwayChat[0];
  const started = Date.now();
  const check = () => {
    if (chat.connected && chat.joins >= 2) {
      resolve({delays: chat.delays, messages: chat.messages.map(m => m.text)});
      return;
    }
    if (Date.now() - started > 30000) { reject(new Error("no rejoin: " + chat.delays)); return; }
    setTimeout(check, 20);
  };
  check();
})
"""

DISCONNECTED = """
new Promise((resolve, reject) => {
  const chat = window.castwayChat[0];
  const started = Date.now();
  const check = () => {
    if (!chat.connected && chat.delays.length >= %(attempts)d) { resolve(chat.delays); return; }
    if (Date.now() - started > 30000) { reject(new Error("still connected")); return; }
    setTimeout(check, 20);
  };
  check();
})
"""


async def test_the_widget_reconnects_with_backoff_after_a_server_restart(
        tmp_path: Path) -> None:
    port = free_port()
    async with launch_browser(tmp_path) as browser:
        page = await browser.new_page()
        async with serve(_page_app(), port) as url:
            await _open(page, f"{url}/watch/demo")
        # The server is gone: the widget retries with growing, jittered delays.
        await page.evaluate(DISCONNECTED % {"attempts": 3}, await_promise=True, timeout_s=40)
        async with serve(_page_app(), port) as url:
            rejoined = await page.evaluate(REJOINED, await_promise=True, timeout_s=40)
            assert rejoined["messages"] == []  # the new server's (empty) history
        delays = rejoined["delays"]
        assert len(delays) >= 3
        for attempt, delay in enumerate(delays, start=1):
            assert 0 <= delay <= min(30000, 500 * 2 ** attempt), delays
        assert len(set(delays)) == len(delays)  # jittered, not in lockstep
        assert not page.errors, page.errors


def test_the_markup_escapes_the_channel_and_puts_the_chat_beside_the_player() -> None:
    html = widget_html("a'><script>")
    assert "data-castway-chat='a&#x27;&gt;&lt;script&gt;'" in html
    assert html.count("<script") == 1
    row = with_chat("<video></video>", "demo")
    assert row.startswith("<div class=castway-chat-row><div class=castway-chat-player>"
                          "<video></video></div>")
    assert widget_html("demo") in row
