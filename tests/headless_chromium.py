"""A real headless Chromium for tests, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read protocol messages (JSON, each ending in a NUL byte)
from its file descriptor 3 and write its answers and events to 4, so no port, no websocket library
and no driver are needed. A page is loaded in a fresh tab; what it logs as an error (console errors,
uncaught exceptions, failed loads) is collected, and expressions are evaluated in it afterwards.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe")


@dataclass
class PageLoad:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    values: dict[str, Any] = field(default_factory=dict)  # each expression's value after the load


class HeadlessChromium:
    """``with HeadlessChromium(binary) as browser: browser.load(url, expressions)``."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.binary, self.timeout = binary, timeout
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> HeadlessChromium:
        self._profile = tempfile.TemporaryDirectory(prefix="smz-chromium-")
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # bash puts the two pipe ends on descriptors 3 and 4, where Chromium looks for them (dash
        # cannot: it refuses descriptors above 9).
        command = f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}'
        self._process = subprocess.Popen(
            [
                "bash",
                "-c",
                command,
                self.binary,
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            pass_fds=(to_browser, from_browser),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._send("Browser.close")
            self._process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait()
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)
            self._profile.cleanup()

    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _receive(self, wanted: Any) -> dict[str, Any]:
        """Read messages until ``wanted(message)``; the others are kept as events."""
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message
                self._events.append(message)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"chromium sent nothing wanted in {self.timeout} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed its pipe")
            self._buffer += chunk

    def _call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        sent = self._send(method, params, session)
        answer = self._receive(lambda m: m.get("id") == sent)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def load(self, url: str, expressions: tuple[str, ...] = ()) -> PageLoad:
        """Open ``url`` in a new tab, wait for its load event, then evaluate each expression."""
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self._call(f"{domain}.enable", session=session)
        self._events.clear()
        self._call("Page.navigate", {"url": url}, session)
        self._receive(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session)
        page = PageLoad()
        for expression in expressions:
            result = self._call(
                "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
            )
            if "exceptionDetails" in result:
                raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
            page.values[expression] = result["result"].get("value")
        page.errors = [error for event in self._events if (error := _error_of(event, session))]
        self._call("Target.closeTarget", {"targetId": target})
        return page


def _error_of(event: dict[str, Any], session: str) -> str | None:
    """The text of an event that reports an error on the page, else None."""
    if event.get("sessionId") != session:
        return None
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console: " + " ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"])
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return "exception: " + str(details.get("exception", {}).get("description", details.get("text")))
    if method == "Log.entryAdded" and params["entry"].get("level") == "error":
        return f"log ({params['entry'].get('source')}): {params['entry'].get('text')}"
    return None
