"""Real `bstrain serve` processes on 127.0.0.1 ports, started once per checkpoint and shared."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process; url is its HTTP root."""

    def __init__(self, checkpoint, *extra: str, host: str = "127.0.0.1"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/v1/stream"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "blendsync.train.cli", "serve", "--checkpoint", str(checkpoint), "--host", host,
             "--port", str(self.port), *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read()}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not answer /healthz within 120 s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture(scope="session")
def live_server(live_checkpoint):
    server = Server(live_checkpoint)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def offline_server(checkpoint):
    server = Server(checkpoint, "--max-upload-mb", "1")
    yield server
    server.stop()
