"""Real `bstrain serve` processes on 127.0.0.1 ports, started once per checkpoint and shared."""

from __future__ import annotations

import pytest

from tests.helpers import ServerProcess


@pytest.fixture(scope="session")
def live_server(live_checkpoint):
    server = ServerProcess(live_checkpoint)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def offline_server(checkpoint):
    server = ServerProcess(checkpoint, "--max-upload-mb", "1")
    yield server
    server.stop()
