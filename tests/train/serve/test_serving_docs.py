"""docs/serving.md's Python client runs as written against a real server."""

from __future__ import annotations

import contextlib
import io

import pytest

from tests.helpers import REPO
from tests.test_docs import _fenced

pytest.importorskip("websockets")


@pytest.mark.slow
def test_the_python_client_on_the_serving_page_runs(live_server, monkeypatch):
    blocks = _fenced((REPO / "docs" / "serving.md").read_text(), languages=("python",))
    assert blocks
    monkeypatch.chdir(REPO)
    for block in blocks:
        code = block.replace("ws://127.0.0.1:8000/v1/stream", live_server.ws)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "serving.md:python", "exec"), {})
        assert "frames of 52 channels at 30.0 fps; {'type': 'end'" in out.getvalue(), out.getvalue()
