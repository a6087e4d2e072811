"""The live page in a real headless Chromium (the Debian package), driven over the DevTools
protocol: a fake microphone plays a WAV, the page streams it to a real server and draws the
face from the frames that come back. The drawn mouth follows jawOpen, and jawOpen follows
the audio (the server's curves for the same file, aligned). A screenshot is kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import REPO, free_port

pytest.importorskip("websockets")
from websockets.sync.client import connect  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)"),
]


def page_target(port: int) -> str:
    """The DevTools WebSocket URL of the browser's first page."""
    deadline = time.time() + 60
    while True:
        try:
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
            return next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        except (OSError, StopIteration):
            if time.time() > deadline:
                raise
            time.sleep(0.2)


class DevTools:
    """One page target of a Chromium, spoken to over its DevTools WebSocket (ws, open)."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res.get("result", {}).get("value")


def test_the_live_page_draws_a_face_that_follows_the_microphone(live_server, live_checkpoint, tmp_path):
    audio = REPO / "data" / "example" / "ava_take1.wav"
    mic = tmp_path / "mic.wav"  # the fake microphone plays 16-bit PCM WAV, looped
    y, sr = sf.read(str(audio), dtype="int16")
    sf.write(mic, y, sr, subtype="PCM_16")
    port = free_port()
    browser = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={mic}",
         "--autoplay-policy=no-user-gesture-required", f"--remote-debugging-port={port}",
         f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    try:
        with connect(page_target(port), max_size=None) as ws:
            doc = _drive(DevTools(ws), live_server, tmp_path)
    finally:
        browser.terminate()
        browser.wait(30)
    _check(doc, tmp_path, live_checkpoint, audio)


def _drive(page: DevTools, live_server, tmp_path) -> dict | None:
    """Open the page with autostart, wait for 240 frames (or an error), keep a screenshot."""
    import base64

    page.call("Page.enable")
    page.call("Page.navigate", url=live_server.url + "/?autostart")
    doc = None
    deadline = time.time() + 90
    while time.time() < deadline:
        doc = page.evaluate("JSON.stringify(window.blendsync || null)")
        doc = json.loads(doc) if doc else None
        if doc and (doc["frames"] >= 240 or doc.get("error")):
            break
        time.sleep(0.5)
    shot = page.call("Page.captureScreenshot", format="png")["data"]
    # Stop: the latency shown is frozen at what it was while streaming.
    at_stop = json.loads(page.evaluate('document.getElementById("stop").click(); JSON.stringify(window.blendsync)'))
    time.sleep(2)
    after = json.loads(page.evaluate("JSON.stringify(window.blendsync)"))
    doc = {
        **doc,
        "at_stop": at_stop,
        "after_stop": after,
        "status": page.evaluate('document.getElementById("status").textContent'),
    }
    (tmp_path / "live_page.png").write_bytes(base64.b64decode(shot))
    keep = os.environ.get("BLENDSYNC_TEST_ARTIFACTS")  # a folder to keep the screenshot in
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "live_page.png", Path(keep) / "live_page.png")
    return doc


def _check(doc, tmp_path, live_checkpoint, audio) -> None:
    from tests.train.serve.test_server import _streamed

    assert doc is not None and not doc.get("error"), doc
    assert doc["frames"] >= 240 and doc["state"] == "streaming"
    # One latency, as the benchmark measures it: above the model's lookahead, below a second.
    assert 60 < doc["latencyMs"] <= doc["latencyP99Ms"] < 1000, doc["latencyMs"]
    stop, after = doc["at_stop"], doc["after_stop"]
    assert after["stopped"] and (after["latencyMs"], after["latencyP99Ms"]) == (stop["latencyMs"], stop["latencyP99Ms"])
    assert doc["status"].count(" ms") == 2 and "stated" not in doc["status"], doc["status"]
    assert (tmp_path / "live_page.png").stat().st_size > 1000
    jaw = np.array([v for _, v in doc["jawOpen"]])
    mouth = np.array(doc["mouth"], float)
    assert np.corrcoef(jaw, mouth)[0, 1] >= 0.9  # the drawn mouth follows jawOpen
    # jawOpen follows the audio: the server's curves for the file, at the loop's offset
    want = _streamed(live_checkpoint, audio)[:, _jaw_index(live_checkpoint)]
    got = jaw[60:240]  # past the first two seconds (the stream's start), as the file loops
    loop = np.concatenate([want, want, want])
    best = max(np.corrcoef(got, loop[k : k + len(got)])[0, 1] for k in range(len(want)))
    assert best >= 0.8, best


def _jaw_index(checkpoint) -> int:
    from blendsync.train.core.checkpoint import Checkpoint

    return Checkpoint.load(checkpoint).channels.index("jawOpen")
