"""bstrain serve end to end: real server processes on 127.0.0.1, real HTTP and WebSocket
clients. Batch = predict, a session = stream, sessions isolated, bad input refused with its
reason while everyone else is served."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import REPO, ServerProcess

websockets = pytest.importorskip("websockets")
from websockets.sync.client import connect  # noqa: E402

pytestmark = pytest.mark.slow
EXAMPLE = REPO / "data" / "example"
TAKES = sorted(p for p in EXAMPLE.iterdir() if p.suffix in (".wav", ".flac"))


def _post(url: str, data: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _pcm(path) -> tuple[bytes, int]:
    y, sr = sf.read(str(path), dtype="int16", always_2d=True)
    return y[:, 0].tobytes(), sr


def session(url: str, path, *, chunk_s: float = 0.02, fmt: str = "json", stop_after=None, **extra):
    """Stream a file's PCM through one session: (ready, frames (N, C), end message)."""
    pcm, sr = _pcm(path)
    start = {"type": "start", "sample_rate": sr, "channels": 1, "encoding": "pcm_s16le", "format": fmt, **extra}
    step = 2 * int(sr * chunk_s)
    with connect(url, max_size=None) as ws:
        ws.send(json.dumps(start))
        ready = json.loads(ws.recv())
        for i in range(0, len(pcm) if stop_after is None else stop_after, step):
            ws.send(pcm[i : i + step])
        if stop_after is not None:
            ws.socket.close()  # gone without a close frame, as a crashed client
            return ready, None, None
        ws.send(json.dumps({"type": "end"}))
        frames = []
        while True:
            m = ws.recv()
            if isinstance(m, bytes):
                from blendsync.train.serve.protocol import decode_binary_frame

                j, _, values = decode_binary_frame(m)
                assert j == len(frames)
                frames.append(values)
                continue
            msg = json.loads(m)
            if msg["type"] != "frame":
                return ready, np.array(frames, np.float32), msg
            assert msg["frame"] == len(frames) and abs(msg["time"] - msg["frame"] / ready["fps"]) < 1e-6
            frames.append(msg["values"])


def _streamed(checkpoint, path, fps=None) -> np.ndarray:
    """What `bstrain stream` sends for a file (its library call, every frame as computed)."""
    from blendsync.train.inference.predict import Predictor
    from blendsync.train.inference.sources import file_chunks
    from blendsync.train.inference.stream import stream_audio

    pred = Predictor.load(checkpoint)
    chunks, rate = file_chunks(path, 0.01)
    rows = []
    stream_audio(pred, chunks, rate, lambda j, row: rows.append(row.copy()), fps=fps or pred.fps, realtime=False)
    return np.array(rows, np.float32)


def test_batch_gives_predicts_curves(offline_server, checkpoint, tmp_path):
    from blendsync.train.inference.batch import predict

    audio = EXAMPLE / "ava_take1.wav"
    predict([audio], checkpoint, tmp_path, fps=60, formats=("livelink", "npy", "json"), plot=False)
    want = np.load(tmp_path / "ava_take1.npy")
    code, body = _post(offline_server.url + "/v1/animate?format=json&fps=60", audio.read_bytes())
    doc = json.loads(body)
    assert code == 200 and doc["fps"] == 60 and len(doc["channels"]) == 52 and doc["frames"] == len(want)
    # One shape for curves as JSON: predict's file, the same bytes but for the source's name.
    predicted = json.loads((tmp_path / "ava_take1.json").read_text())
    assert predicted["source"] == str(audio) and doc["source"] is None
    assert list(doc) == list(predicted) and {**doc, "source": str(audio)} == predicted
    np.testing.assert_allclose(np.array(doc["values"]), want, rtol=0, atol=5e-7 + 1e-8)  # 6 decimals
    code, body = _post(offline_server.url + "/v1/animate?format=livelink&fps=60", audio.read_bytes())
    assert code == 200 and body.decode() == (tmp_path / "ava_take1.csv").read_text()
    code, body = _post(offline_server.url + "/v1/animate?format=npy&fps=60", audio.read_bytes())
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), want)
    code, body = _post(offline_server.url + "/v1/animate?format=npy&fps=60&channel_order=model", audio.read_bytes())
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), want)
    flac = EXAMPLE / "bruno_take1.flac"  # any format soundfile reads
    code, body = _post(offline_server.url + "/v1/animate?fps=30", flac.read_bytes())
    assert code == 200 and len(json.loads(body)["values"]) > 30


def _form(fields: list[tuple[str, str | None, bytes]], boundary: str = "----blendsync7MA4YWxk") -> tuple[bytes, dict]:
    """A multipart/form-data body as curl -F and browsers send it: (name, filename, content)."""
    body = b""
    for name, filename, content in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        body += b"Content-Type: application/octet-stream\r\n" if filename is not None else b""
        body += b"\r\n" + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_a_multipart_form_s_file_is_animated_as_the_body_is(offline_server):
    audio = EXAMPLE / "ava_take1.wav"
    _, want = _post(offline_server.url + "/v1/animate?format=livelink", audio.read_bytes())
    form, headers = _form([("fps", None, b"60"), ("file", r"C:\takes\ava_take1.wav", audio.read_bytes())])
    code, body = _post(offline_server.url + "/v1/animate?format=livelink", form, headers)
    assert code == 200 and body == want
    code, body = _post(offline_server.url + "/v1/animate?format=json", form, headers)
    assert code == 200 and json.loads(body)["source"] == "ava_take1.wav"
    form, headers = _form([("audio", None, audio.read_bytes())])  # a field, not a file: taken by its name
    assert _post(offline_server.url + "/v1/animate?format=livelink", form, headers) == (200, want)
    form, headers = _form([("fps", None, b"60")])
    code, body = _post(offline_server.url + "/v1/animate", form, headers)
    assert code == 400 and "the form holds no file" in json.loads(body)["error"]
    code, body = _post(offline_server.url + "/v1/animate", b"x", {"Content-Type": "multipart/mixed; boundary=x"})
    assert code == 415 and "send the audio file as the request body" in json.loads(body)["error"]
    form, headers = _form([("file", "notes.txt", b"not audio at all")])
    code, body = _post(offline_server.url + "/v1/animate", form, headers)
    assert code == 400 and json.loads(body)["error"].startswith("notes.txt: cannot decode audio")
    form, headers = _form([("file", "prise_é.txt", b"not audio at all")])  # a browser's UTF-8 name
    code, body = _post(offline_server.url + "/v1/animate", form, headers)
    assert code == 400 and json.loads(body)["error"].startswith("prise_é.txt: cannot decode audio")


def test_batch_of_a_long_file_in_pieces_gives_the_one_pass_curves(offline_server, checkpoint, tmp_path):
    """Over 40 s the server computes a file's openSMILE pass and model blocks in pieces, one per
    core: the curves of one pass (what predict computes)."""
    from blendsync.train.inference.predict import Predictor, animate_file

    y = np.concatenate([sf.read(str(p), dtype="float32", always_2d=True)[0][:, 0] for p in TAKES if p.suffix == ".wav"])
    ogg = tmp_path / "long.ogg"  # under the fixture's --max-upload-mb 1
    sf.write(ogg, np.tile(y, 2)[: 48 * 22050], 22050, format="OGG", subtype="VORBIS")
    want, _ = animate_file(Predictor.load(checkpoint), ogg, fps=60)
    code, body = _post(offline_server.url + "/v1/animate?format=npy&fps=60", ogg.read_bytes())
    assert code == 200
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), want)


def test_model_and_health(live_server, live_checkpoint):
    from blendsync.train.core.checkpoint import Checkpoint

    ck = Checkpoint.load(live_checkpoint)
    code, body = _get(live_server.url + "/v1/model")
    doc = json.loads(body)
    assert code == 200 and doc["channels"] == ck.channels and doc["live"] and doc["lookahead"] == ck.lookahead
    assert doc["feature_config_hash"] == ck.feature_config_hash and doc["train_config_hash"] == ck.config.hash
    assert doc["channel_orders"][0] == "model" and "unreal61" in doc["channel_orders"]
    assert json.loads(_get(live_server.url + "/healthz")[1])["status"] == "ok"
    code, body = _get(live_server.url + "/")
    assert code == 200 and b"/v1/stream" in body
    assert _get(live_server.url + "/..%2Fapp.py")[0] == 404


@pytest.mark.parametrize("fmt", ["json", "binary"])
def test_a_session_gives_streams_frames(live_server, live_checkpoint, fmt):
    audio = EXAMPLE / "ava_take2.wav"
    ready, frames, end = session(live_server.ws, audio, fmt=fmt)
    want = _streamed(live_checkpoint, audio)
    assert ready["type"] == "ready" and ready["fps"] == 30.0 and ready["latency_ms"] > 60
    assert end == {"type": "end", "frames": len(want), "dropped": 0}
    np.testing.assert_allclose(frames, want, rtol=0, atol=1e-4)


def test_a_session_at_60_fps_in_another_channel_order(live_server, live_checkpoint):
    from blendsync.shared.channels import CHANNEL_ORDERS, reorder

    audio = EXAMPLE / "chen_take1.wav"
    ready, got, _ = session(live_server.ws, audio, fps=60, channel_order="unreal61")
    assert ready["channels"] == list(CHANNEL_ORDERS["unreal61"]) and ready["fps"] == 60
    want = reorder(_streamed(live_checkpoint, audio, fps=60), _model_channels(live_checkpoint), "unreal61")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_a_session_in_the_model_s_own_channel_order(live_server, live_checkpoint):
    audio = EXAMPLE / "chen_take1.wav"
    ready, got, _ = session(live_server.ws, audio, channel_order="model")
    assert ready["channels"] == _model_channels(live_checkpoint)
    np.testing.assert_allclose(got, _streamed(live_checkpoint, audio), rtol=0, atol=1e-4)


def _model_channels(checkpoint):
    from blendsync.train.core.checkpoint import Checkpoint

    return Checkpoint.load(checkpoint).channels


def test_eight_concurrent_sessions_give_eight_separate_runs(live_server, live_checkpoint):
    takes = TAKES[:8]
    want = {p.name: _streamed(live_checkpoint, p) for p in takes}
    got, errors = {}, []

    def run(p):
        try:
            got[p.name] = session(live_server.ws, p, chunk_s=0.01)[1]
        except Exception as e:  # reported below
            errors.append(f"{p.name}: {e!r}")

    threads = [threading.Thread(target=run, args=(p,)) for p in takes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for name, frames in want.items():
        np.testing.assert_allclose(got[name], frames, rtol=0, atol=1e-4, err_msg=name)


def test_a_client_gone_mid_stream_leaves_the_others_running(live_server, live_checkpoint):
    audio = EXAMPLE / "ava_take3.wav"
    result = {}
    other = threading.Thread(target=lambda: result.update(frames=session(live_server.ws, audio, chunk_s=0.01)[1]))
    other.start()
    pcm, _ = _pcm(EXAMPLE / "chen_take2.wav")
    session(live_server.ws, EXAMPLE / "chen_take2.wav", stop_after=len(pcm) // 2)
    other.join(120)
    np.testing.assert_allclose(result["frames"], _streamed(live_checkpoint, audio), rtol=0, atol=1e-4)
    assert live_server.alive()
    for _ in range(50):  # the abandoned session is cleaned up
        if json.loads(_get(live_server.url + "/healthz")[1])["sessions"] == 0:
            break
        import time

        time.sleep(0.1)
    assert json.loads(_get(live_server.url + "/healthz")[1])["sessions"] == 0


BAD_SESSIONS = {
    "audio first": ([b"\x00\x01" * 100], "the first message must be"),
    "not JSON": (["{start"], "must be a JSON object"),
    "no sample rate": ([json.dumps({"type": "start"})], "sample_rate is required"),
    "rate out of range": ([json.dumps({"type": "start", "sample_rate": 10**9})], "sample_rate must be a whole number"),
    "unknown encoding": ([json.dumps({"type": "start", "sample_rate": 16000, "encoding": "mp3"})], "encoding must be"),
    "unknown field": (
        [json.dumps({"type": "start", "sample_rate": 16000, "volume": 3})],
        "unknown field(s) ['volume']",
    ),
    "unknown order": (
        [json.dumps({"type": "start", "sample_rate": 16000, "channel_order": "maya"})],
        "channel_order must be one of",
    ),
    "a gain of 1e39": (
        [json.dumps({"type": "start", "sample_rate": 16000, "gain": 1e39})],
        "start: gain must be a number from 0 to 10",
    ),
    "a livelink port of 70000": (
        [json.dumps({"type": "start", "sample_rate": 16000, "livelink": "127.0.0.1:70000"})],
        "with a port in 1-65535",
    ),
    "two starts": (
        [json.dumps({"type": "start", "sample_rate": 16000}), json.dumps({"type": "start", "sample_rate": 16000})],
        "a session takes one start message",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SESSIONS))
def test_a_malformed_session_is_closed_with_1008_and_its_reason(live_server, case):
    from websockets.exceptions import ConnectionClosed

    messages, phrase = BAD_SESSIONS[case]
    received = []
    with connect(live_server.ws) as ws:
        for m in messages:
            ws.send(m)
        with pytest.raises(ConnectionClosed) as e:
            while True:
                received.append(ws.recv(timeout=30))
    errors = [json.loads(m) for m in received if isinstance(m, str) and '"error"' in m]
    assert errors and phrase in errors[-1]["message"], received
    assert e.value.rcvd.code == 1008
    assert live_server.alive() and json.loads(_get(live_server.url + "/healthz")[1])["status"] == "ok"


def test_bad_uploads_get_their_errors(offline_server):
    code, body = _post(offline_server.url + "/v1/animate", b"\0" * (1536 * 1024))  # --max-upload-mb 1
    assert code == 413 and "exceeds 1 MB" in json.loads(body)["error"]
    code, body = _post(offline_server.url + "/v1/animate", b"not audio at all")
    error = json.loads(body)["error"]
    assert code == 400 and error.startswith("the uploaded audio: cannot decode audio"), error
    assert "/" not in error and "bsserve" not in error  # no path of the server's reaches a client
    code, body = _post(offline_server.url + "/v1/animate?format=mp4", (EXAMPLE / "ava_take1.wav").read_bytes())
    assert code == 400 and "format must be one of" in json.loads(body)["error"]
    code, body = _post(offline_server.url + "/v1/animate", b"")
    assert code == 400
    one_hz = io.BytesIO()  # 2 kB claiming a 1 Hz rate: hours of audio at 16 kHz
    sf.write(one_hz, np.zeros(1000, np.int16), 1, format="WAV", subtype="PCM_16")
    code, body = _post(offline_server.url + "/v1/animate", one_hz.getvalue())
    assert code == 400 and "its sample rate is 1 Hz; audio from 8000 to 192000 Hz is taken" in json.loads(body)["error"]
    for fps in ("", "0x1e", "nan", "29.97", "30.0.0", "inf"):
        code, body = _post(offline_server.url + f"/v1/animate?fps={fps}", (EXAMPLE / "ava_take1.wav").read_bytes())
        assert code == 400 and json.loads(body)["error"].startswith("fps must be 30 or 60"), body
    for gain in ("1e39", "inf", "nan", ""):
        code, body = _post(offline_server.url + f"/v1/animate?gain={gain}", (EXAMPLE / "ava_take1.wav").read_bytes())
        assert code == 400 and json.loads(body)["error"].startswith("gain must be a number from 0 to 10"), body
    assert offline_server.alive()


def test_a_token_is_required_off_loopback(checkpoint, capsys):
    from blendsync.train.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--checkpoint", str(checkpoint), "--host", "0.0.0.0"])
    assert e.value.code == 1 and "give a bearer token with --token" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["serve", "--checkpoint", str(checkpoint), "--host", "0.0.0.0", "--token", "  "])
    assert e.value.code == 1 and "--token must not be blank" in capsys.readouterr().err
    server = ServerProcess(checkpoint, "--token", " s3cret ", host="0.0.0.0")  # read without its spaces
    try:
        assert _get(server.url + "/v1/model")[0] == 401
        assert _get(server.url + "/v1/model", {"Authorization": "Bearer wrong"})[0] == 401
        assert _get(server.url + "/v1/model", {"Authorization": "Bearer s3cret"})[0] == 200
        assert _get(server.url + "/v1/model?token=s3cret")[0] == 200
        assert _post(server.url + "/v1/animate", b"x")[0] == 401
        from websockets.exceptions import InvalidStatus

        for query in ("", "?token=wrong"):  # refused at the handshake: 401 and the reason, as the other routes
            with pytest.raises(InvalidStatus) as e:
                with connect(server.ws + query):
                    pass
            assert e.value.response.status_code == 401 and b"a bearer token is required" in e.value.response.body
        with connect(server.ws + "?token=s3cret") as ws:
            ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            assert json.loads(ws.recv(timeout=60))["type"] == "ready"
    finally:
        err = server.stop()
    assert "warning: serving on 0.0.0.0" in err


def test_a_whole_file_in_one_message_loses_no_frame(live_server, live_checkpoint):
    """511 frames computed at once (more than the send queue holds) wait for the client
    rather than being dropped: only a client slow to read loses frames."""
    audio = EXAMPLE / "ava_take1.wav"
    _, frames, end = session(live_server.ws, audio, chunk_s=1000.0, fps=60)
    want = _streamed(live_checkpoint, audio, fps=60)
    assert len(want) > 300 and end == {"type": "end", "frames": len(want), "dropped": 0}
    np.testing.assert_allclose(frames, want, rtol=0, atol=1e-4)


def test_a_session_whose_audio_fails_ends_and_frees_its_slot(checkpoint):
    """A client sending more than the inbox holds, with NaN in it: the computation's error ends
    the session (1008, the reason said) and frees its slot, rather than the reader waiting
    forever for room only the failed computation would make; the server goes on and stops."""
    from websockets.exceptions import ConnectionClosed

    server = ServerProcess(checkpoint, "--max-sessions", "2")
    try:
        for _ in range(2):  # both slots, one after the other
            with connect(server.ws, max_size=None) as ws:
                ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_f32le"}))
                assert json.loads(ws.recv(timeout=60))["type"] == "ready"
                audio = np.random.default_rng(0).normal(0, 0.05, 400_000).astype("<f4")  # 1.6 MB
                bad = audio.copy()
                bad[-1] = np.nan
                received = []
                with pytest.raises(ConnectionClosed) as e:
                    ws.send(audio.tobytes())
                    ws.send(bad.tobytes())
                    ws.send(audio.tobytes())
                    while True:
                        received.append(ws.recv(timeout=60))
            assert e.value.rcvd is not None and e.value.rcvd.code == 1008, e.value
            errors = [json.loads(m)["message"] for m in received if isinstance(m, str) and '"error"' in m]
            assert errors and "NaN/inf" in errors[-1]
        for _ in range(50):
            if json.loads(_get(server.url + "/healthz")[1])["sessions"] == 0:
                break
            import time

            time.sleep(0.1)
        assert json.loads(_get(server.url + "/healthz")[1])["sessions"] == 0
        ready, frames, end = session(server.ws, EXAMPLE / "chen_take3.wav")  # a slot is free
        assert ready["type"] == "ready" and end["type"] == "end" and len(frames) > 0
    finally:
        server.stop()
    assert not server.alive()


def test_without_a_token_no_other_site_drives_the_server(offline_server, live_server):
    """DNS rebinding (a site's name resolved to 127.0.0.1: its Host), another site's page (its
    Origin: a WebSocket or a cross-site POST): refused with the reason; this machine's own
    programs (no Origin) and the server's own page (its own Origin) are served."""
    from websockets.exceptions import InvalidStatus

    audio = (EXAMPLE / "chen_take3.wav").read_bytes()
    host = offline_server.url.split("//")[1]
    for headers, phrase in (
        ({"Host": "rebind.evil.example"}, "is not this machine's"),
        ({"Origin": "http://evil.example"}, "from the web origin 'http://evil.example' need a token"),
        ({"Origin": "null"}, "need a token"),
    ):
        code, body = _post(offline_server.url + "/v1/animate", audio, {**headers, "Content-Type": "text/plain"})
        assert code == 403 and phrase in json.loads(body)["error"], body
        assert _get(offline_server.url + "/v1/model", headers)[0] == 403
    assert _post(offline_server.url + "/v1/animate?fps=30", audio, {"Origin": f"http://{host}"})[0] == 200
    assert _get(offline_server.url + "/v1/model", {"Host": "localhost"})[0] == 200
    with pytest.raises(InvalidStatus) as e:
        with connect(live_server.ws, additional_headers={"Origin": "http://evil.example"}):
            pass
    assert e.value.response.status_code == 403
    live_host = live_server.url.split("//")[1]
    with connect(live_server.ws, additional_headers={"Origin": f"http://{live_host}"}) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"


def test_live_link_goes_to_this_machine_unless_the_operator_allows_more(live_server):
    from websockets.exceptions import ConnectionClosed

    for target in ("10.1.2.3:11111", "255.255.255.255:11111"):
        with connect(live_server.ws) as ws:
            ws.send(json.dumps({"type": "start", "sample_rate": 16000, "livelink": target}))
            with pytest.raises(ConnectionClosed):
                while True:
                    msg = ws.recv(timeout=60)
                    assert "not on this machine" in json.loads(msg)["message"]
    with connect(live_server.ws) as ws:  # this machine: taken
        ws.send(json.dumps({"type": "start", "sample_rate": 16000, "livelink": "localhost:11111"}))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"


def test_allowed_live_link_hosts_are_the_operator_s():
    from blendsync.train.serve.guard import host_is_loopback, livelink_target

    assert livelink_target("127.0.0.1:9") == ("127.0.0.1", 9)
    assert livelink_target("10.1.2.3:9", ("10.1.2.3",)) == ("10.1.2.3", 9)
    with pytest.raises(ValueError, match="--allow-livelink"):
        livelink_target("10.1.2.3:9", ("10.1.2.4",))
    assert all(map(host_is_loopback, ["127.0.0.1:8000", "localhost", "[::1]:80", "127.1.2.3"]))
    assert not any(map(host_is_loopback, ["evil.example", "10.0.0.1:80", "127.0.0.1.evil.example", ""]))
    assert not any(map(host_is_loopback, ["[::1].evil.example", "[::1]evil:80", "127.0.0.1:18731@evil", "[::1"]))


def test_a_message_over_the_bound_ends_its_session_and_no_other(live_server, live_checkpoint):
    """A 16 MB message added about 360 MB to a session: messages are bounded (2 MiB, 1009 past
    it) and computed in pieces of a second."""
    from websockets.exceptions import ConnectionClosed

    from blendsync.train.serve.app import WS_MAX_MESSAGE_BYTES

    with connect(live_server.ws, max_size=None) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        assert json.loads(ws.recv(timeout=60))["type"] == "ready"
        with pytest.raises(ConnectionClosed) as e:
            ws.send(b"\0" * (WS_MAX_MESSAGE_BYTES + 2))
            while True:
                ws.recv(timeout=60)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1009
    audio = EXAMPLE / "ava_take2.wav"
    _, frames, end = session(live_server.ws, audio, chunk_s=1000.0)  # a whole file in one message, under it
    np.testing.assert_allclose(frames, _streamed(live_checkpoint, audio), rtol=0, atol=1e-4)


def test_a_socket_that_never_starts_is_closed_and_frees_its_slot(live_server):
    from websockets.exceptions import ConnectionClosed

    from blendsync.train.serve.app import START_TIMEOUT_S

    with connect(live_server.ws) as ws:
        assert json.loads(_get(live_server.url + "/healthz")[1])["sessions"] >= 1
        with pytest.raises(ConnectionClosed) as e:
            msg = ws.recv(timeout=START_TIMEOUT_S + 30)
            assert f"no start message within {START_TIMEOUT_S:g} s" in json.loads(msg)["message"]
            ws.recv(timeout=30)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1008


def _closed_by_server(sock, within_s: float) -> bool:
    """True when the server closes `sock` (recv gives b"" or a reset) within `within_s`."""
    import time

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def test_half_sent_headers_are_timed_out_and_a_started_session_is_not(live_server, live_checkpoint):
    import socket
    import time

    from blendsync.train.serve.connections import HEADER_TIMEOUT_S

    conns = [socket.create_connection(("127.0.0.1", live_server.port)) for _ in range(3)]
    silent, half, second_half = conns
    half.sendall(b"GET /healthz HTTP/1.1\r\nHo")
    second_half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert second_half.recv(65536).startswith(b"HTTP/1.1 200")
    second_half.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the next request on the kept-alive connection
    pcm, sr = _pcm(TAKES[0])
    start = {"type": "start", "sample_rate": sr, "channels": 1, "encoding": "pcm_s16le", "format": "json"}
    t0 = time.monotonic()
    with connect(live_server.ws, max_size=None) as ws:
        ws.send(json.dumps(start))
        assert json.loads(ws.recv())["type"] == "ready"
        for sock in conns:
            assert _closed_by_server(sock, HEADER_TIMEOUT_S + 20)
            sock.close()
        assert time.monotonic() - t0 > HEADER_TIMEOUT_S - 1  # (closed by the timeout, not at once)
        time.sleep(max(0.0, t0 + HEADER_TIMEOUT_S + 2 - time.monotonic()))
        ws.send(pcm[: 2 * sr])  # the session outlives the header deadline
        ws.send(json.dumps({"type": "end"}))
        kinds = []
        while not kinds or kinds[-1] == "frame":
            kinds.append(json.loads(ws.recv(timeout=60))["type"])
    assert kinds.count("frame") > 10 and kinds[-1] == "end"


def test_one_ctrl_c_stops_the_server_in_every_state(checkpoint):
    """SIGINT once, while a session streams, an upload is half sent, a request's headers are
    half sent and a socket has sent nothing: the server exits, promptly and cleanly."""
    import signal
    import socket
    import time

    server = ServerProcess(checkpoint)
    try:
        idle = socket.create_connection(("127.0.0.1", server.port))
        half_headers = socket.create_connection(("127.0.0.1", server.port))
        half_headers.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        upload = socket.create_connection(("127.0.0.1", server.port))
        upload.sendall(b"POST /v1/animate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
                       b"Content-Length: 1000000\r\n\r\n" + b"RIFF" + b"\0" * 1000)  # fmt: skip
        pcm, sr = _pcm(TAKES[0])
        start = {"type": "start", "sample_rate": sr, "channels": 1, "encoding": "pcm_s16le", "format": "json"}
        with connect(server.ws, max_size=None) as ws:
            ws.send(json.dumps(start))
            assert json.loads(ws.recv())["type"] == "ready"
            ws.send(pcm[: 2 * sr])
            time.sleep(1.0)
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGINT)
            code = server.proc.wait(timeout=60)
            took = time.monotonic() - t0
            closed = None
            try:
                while True:
                    ws.recv(timeout=10)
            except websockets.exceptions.ConnectionClosed as e:
                closed = e.rcvd.code if e.rcvd is not None else None
        for s in (idle, half_headers, upload):
            s.close()
    finally:
        err = server.stop()
    assert code == 0 and took < 15, (code, took, err)
    assert closed == 1012  # the session was told the server is going away ("service restart")
    assert "Traceback" not in err, err


def test_a_stalled_upload_is_answered_408_and_frees_its_batch_slot(checkpoint):
    """Two uploads that stop sending (the server has two batch slots on two cores) do not keep
    a third one from being animated."""
    import socket
    import time

    from blendsync.train.serve.app import BODY_IDLE_S

    server = ServerProcess(checkpoint)
    try:
        stalled = []
        for _ in range(max(2, __import__("os").cpu_count() or 2)):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"POST /v1/animate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
                      b"Content-Length: 1000000\r\n\r\nRIFF")  # fmt: skip
            stalled.append(s)
        time.sleep(0.5)
        t0 = time.monotonic()
        status, body = _post(server.url + "/v1/animate?format=json", TAKES[0].read_bytes())
        took = time.monotonic() - t0
        answers = []
        for s in stalled:
            s.settimeout(30)
            answers.append(s.recv(65536))
            s.close()
        err = server.stop()
    finally:
        server.stop()
    assert status == 200 and json.loads(body)["frames"] > 0
    assert took < BODY_IDLE_S + 30  # it waited for a slot, then was served
    for a in answers:
        assert a.startswith(b"HTTP/1.1 408") and b"the upload stalled (no byte for 10 s, after 4 bytes)" in a
    assert "Traceback" not in err


def test_a_client_that_leaves_mid_upload_costs_no_traceback(checkpoint):
    import socket
    import time

    server = ServerProcess(checkpoint)
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"POST /v1/animate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nRIFF")
            time.sleep(0.2)
            s.close()
        time.sleep(1.0)
        assert _get(server.url + "/healthz")[0] == 200
    finally:
        err = server.stop()
    assert "Traceback" not in err and "Exception in ASGI application" not in err, err


def test_a_close_reason_is_cut_between_characters_to_123_bytes(live_server):
    from websockets.exceptions import ConnectionClosed

    from blendsync.train.serve.app import close_reason

    assert close_reason("é" * 100).encode() == ("é" * 61).encode()
    with connect(live_server.ws) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "é" * 100}))
        with pytest.raises(ConnectionClosed) as e:
            while True:
                ws.recv(timeout=30)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1008
