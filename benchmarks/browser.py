"""A headless Chromium driven over the DevTools protocol (CDP), for the player tests and
``castway bench latency --players``.

Debian's chromium, a fresh profile per launch, the DevTools endpoint on a port Chromium
picks itself (``--remote-debugging-port=0``, read back from ``DevToolsActivePort``), and a
small CDP client on the ``websockets`` package:

    async with launch_browser(shutil.which("chromium"), tmp_path) as browser:
        page = await browser.new_page()
        await page.goto("http://127.0.0.1:8080/watch/demo")
        print(await page.evaluate("document.title"))

``page.console`` and ``page.errors`` keep what the page logged, for failure messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

logger = logging.getLogger(__name__)

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)
STARTUP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 60.0


class CdpError(Exception):
    """A DevTools command failed, or the page threw."""


@dataclass(eq=False)
class _Connection:
    ws: ClientConnection
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    pages: dict[str, Page] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    async def send(self, method: str, params: dict[str, Any] | None = None, *,
                   session_id: str | None = None,
                   timeout_s: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        message_id = next(self.ids)
        message: dict[str, Any] = {"id": message_id, "method": method,
                                   "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[message_id] = future
        try:
            await self.ws.send(json.dumps(message))
            reply = await asyncio.wait_for(future, timeout_s)
        finally:
            self.pending.pop(message_id, None)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if "id" in message:
                    future = self.pending.get(message["id"])
                    if future is not None and not future.done():
                        future.set_result(message)
                    continue
                page = self.pages.get(message.get("sessionId", ""))
                if page is not None:
                    page.on_event(message.get("method", ""), message.get("params", {}))
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(CdpError("the browser connection closed"))


@dataclass(eq=False)
class Page:
    connection: _Connection
    session_id: str
    target_id: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _loaded: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", "")))
                            for a in params.get("args", []))
            self.console.append(f"{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(str(details.get("exception", {}).get("description")
                                   or details.get("text")))
        elif method == "Page.loadEventFired":
            self._loaded.set()

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   timeout_s: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        return await self.connection.send(method, params, session_id=self.session_id,
                                          timeout_s=timeout_s)

    async def goto(self, url: str, timeout_s: float = 30.0) -> None:
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), timeout_s)

    async def evaluate(self, expression: str, *, await_promise: bool = False,
                       timeout_s: float = COMMAND_TIMEOUT_S) -> Any:
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": await_promise},
            timeout_s=timeout_s)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(str(details.get("exception", {}).get("description")
                               or details.get("text")))
        return result.get("result", {}).get("value")


@dataclass(eq=False)
class Browser:
    process: asyncio.subprocess.Process
    connection: _Connection

    async def new_page(self) -> Page:
        target = await self.connection.send("Target.createTarget", {"url": "about:blank"})
        target_id = target["targetId"]
        attached = await self.connection.send("Target.attachToTarget",
                                              {"targetId": target_id, "flatten": True})
        page = Page(self.connection, attached["sessionId"], target_id)
        self.connection.pages[page.session_id] = page
        for domain in ("Page.enable", "Runtime.enable"):
            await page.send(domain)
        return page


async def _devtools_url(profile: Path, process: asyncio.subprocess.Process) -> str:
    """Chromium writes its port and browser path to DevToolsActivePort once listening."""
    marker = profile / "DevToolsActivePort"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while loop.time() < deadline:
        if process.returncode is not None:
            raise CdpError(f"chromium exited with {process.returncode} at startup")
        with contextlib.suppress(FileNotFoundError):
            lines = marker.read_text().splitlines()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        await asyncio.sleep(0.05)
    raise CdpError("chromium did not open its DevTools port")


@contextlib.asynccontextmanager
async def launch_browser(chromium: str, workdir: Path | None = None, *,
                         flags: tuple[str, ...] = ()) -> AsyncIterator[Browser]:
    """A headless ``chromium`` (the executable) with a fresh profile in ``workdir`` and
    ``flags`` besides castway's; killed and cleaned up on exit."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=workdir))
    process = await asyncio.create_subprocess_exec(
        chromium, *CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        url = await _devtools_url(profile, process)
        async with websockets.connect(url, max_size=None) as ws:
            connection = _Connection(ws)
            connection.reader = asyncio.create_task(connection.read())
            try:
                yield Browser(process, connection)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.send("Browser.close"), 5)
                connection.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await connection.reader
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        shutil.rmtree(profile, ignore_errors=True)
