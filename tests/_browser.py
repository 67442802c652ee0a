"""A small headless-Chromium driver over the DevTools protocol, for tests of report.html."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class Browser:
    """One headless Chromium with one page, driven through its DevTools websocket."""

    def __init__(self, binary: str, width: int = 1300, height: int = 900) -> None:
        import websocket

        self._profile = tempfile.mkdtemp(prefix="segpipe-chromium-")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "--hide-scrollbars", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("chromium exited before its DevTools endpoint was up")
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(found.group(1)) if found else None
        if port is None:
            self.close()
            raise RuntimeError("chromium printed no DevTools endpoint within 60 s")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self._id = 0
        self.events: list[dict] = []
        self.call("Page.enable")
        self.call("Network.enable")

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result (events met meanwhile are kept in `events`)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def js(self, expression: str):
        """Value of a JavaScript expression in the page (awaits promises)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                value = self.js(expression)
            except RuntimeError as exc:  # e.g. no document.body yet while a page loads
                value, last = None, exc
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {expression} (last error: {last})")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def key(self, key: str) -> None:
        """Press and release one key (ArrowLeft, ArrowRight, ArrowUp, ArrowDown)."""
        codes = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40}
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=codes[key],
                      nativeVirtualKeyCode=codes[key])

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the first element matching `selector`."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
                      f" const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: Path | None = None, selector: str | None = None) -> np.ndarray:
        """RGB screenshot of the page, or of one element; saved to `path` when given."""
        params: dict = {"format": "png"}
        if selector:
            rect = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
                           f" const r = e.getBoundingClientRect(); return [r.x + scrollX, r.y + scrollY, r.width, r.height]; }})()")
            params["clip"] = {"x": rect[0], "y": rect[1], "width": rect[2], "height": rect[3], "scale": 1}
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        if path is not None:
            Path(path).write_bytes(data)
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self._profile, ignore_errors=True)


def coloured_pixels(rgb: np.ndarray, tolerance: int = 24) -> int:
    """Pixels whose channels differ (an overlay colour over a greyscale image)."""
    rgb = rgb.astype(np.int16)
    return int(np.count_nonzero(np.ptp(rgb, axis=-1) > tolerance))
