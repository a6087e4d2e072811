"""The Blender add-on in a real headless Blender (skipped where `blender` is not installed):
the zip `bstrain blender-addon` packs is installed and enabled as a user would, and curves of
real speech predicted by a real model go onto shape keys from files, from a running `bstrain
serve` and live. Blender runs tests/train/inference/blender_steps.py; the checks are here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blendsync.blender_addon.curve_files import read_channel_list
from blendsync.shared.channels import ARKIT_52, pascal_case
from blendsync.train.inference.blender_addon import pack_addon
from tests.helpers import REPO, SHARED_DATA, ServerProcess, free_port

BLENDER = shutil.which("blender")
pytestmark = pytest.mark.skipif(BLENDER is None, reason="Blender is not installed (apt-get install blender)")
STEPS = Path(__file__).with_name("blender_steps.py")
TOKEN = "blender-test-token"


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("addon") / "blendsync_blender.zip"
    names = pack_addon(out)
    assert "blendsync_blender/__init__.py" in names
    return out


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """Real speech (the example data's where ../shared is absent) as 16-bit PCM WAV."""
    src = SHARED_DATA / "speech" / "speechbrain_example1_16k.wav"
    src = src if src.is_file() else REPO / "data" / "example" / "ava_take1.wav"
    y, sr = sf.read(src, dtype="int16")
    out = tmp_path_factory.mktemp("speech") / "line.wav"
    sf.write(out, y, sr, subtype="PCM_16")
    return out


@pytest.fixture(scope="module")
def predicted(checkpoint, speech, tmp_path_factory) -> Path:
    """bstrain predict's CSV, JSON and npy of the speech at 60 fps."""
    out = tmp_path_factory.mktemp("predicted")
    r = subprocess.run(
        [sys.executable, "-m", "blendsync.train.cli", "predict", str(speech), "--checkpoint", str(checkpoint),
         "--out", str(out), "--format", "livelink", "--format", "json", "--format", "npy", "--no-plot"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (out / "channels.txt").write_text("\n".join(ARKIT_52) + "\n")
    return out / speech.stem


def run_blender(addon_zip: Path, tmp_path: Path, plan: list[dict], cwd: Path | None = None) -> list[dict]:
    """The plan's steps in one headless Blender; Blender's user folders are the test's own."""
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "BLENDER_USER_SCRIPTS": str(tmp_path / "scripts"),
           "BLENDER_USER_CONFIG": str(tmp_path / "config")}  # fmt: skip
    r = subprocess.run(
        [BLENDER, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(STEPS), "--",
         str(addon_zip), str(tmp_path / "plan.json"), str(tmp_path / "out.json")],
        capture_output=True, text=True, env=env, timeout=600, cwd=cwd,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr, r.stdout[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def expected_on_frames(npy: Path, file_fps: float, scene_fps: float, columns: list[int]) -> np.ndarray:
    """predict's curves (its .npy: row i at i / file_fps) at the scene's frames, by numpy alone
    (not the add-on's readers): (K, len(columns))."""
    values = np.load(npy).astype(np.float64)
    times = np.arange(len(values)) / file_fps
    t = np.arange(int(times[-1] * scene_fps + 1e-6) + 1) / scene_fps
    return np.stack([np.interp(t, times, values[:, j]) for j in columns], axis=1)


def keyed(dump: dict, obj: str, key: str) -> np.ndarray:
    return np.array(dump["objects"][obj]["curves"][key])


def test_the_zip_is_what_blender_installs(addon_zip, tmp_path):
    again = pack_addon(tmp_path / "again.zip")
    assert (tmp_path / "again.zip").read_bytes() == addon_zip.read_bytes()  # same sources, same bytes
    with zipfile.ZipFile(addon_zip) as z:
        assert sorted(z.namelist()) == sorted(again)
        assert all(n.startswith("blendsync_blender/") for n in z.namelist())
        source = "\n".join(z.read(n).decode() for n in z.namelist())
    for module in ("numpy", "torch", "blendsync.", "requests", "websockets"):  # Blender's own Python only
        assert f"import {module}" not in source and f"from {module}" not in source


def test_files_go_on_shape_keys_at_the_scene_rate(addon_zip, predicted, speech, tmp_path):
    pascal = [pascal_case(n) for n in ARKIT_52]
    snake = ["_".join(w.lower() for w in __import__("re").findall(r"[A-Z]?[a-z]+", n)) for n in ARKIT_52]
    rig = ["RigJaw", "RigFunnel", "RigBlinkL"]
    (tmp_path / "rig_map.txt").write_text("jawOpen = RigJaw\nmouthFunnel = RigFunnel\neyeBlinkLeft = RigBlinkL\n")
    csv, js, npy = (predicted.with_suffix(s) for s in (".csv", ".json", ".npy"))
    channels = str(predicted.parent / "channels.txt")
    results = run_blender(addon_zip, tmp_path, [
        {"do": "scene_fps", "fps": 24},
        {"do": "mesh", "name": "arkit", "keys": [*pascal, "Extra"]},
        {"do": "import_curves", "kwargs": {"filepath": str(csv), "start_frame": 10, "audio": str(speech)}},
        {"do": "mesh", "name": "snake", "keys": snake[:40]},
        {"do": "import_curves", "kwargs": {"filepath": str(js), "add_audio": False}},
        {"do": "mesh", "name": "npy", "keys": pascal},
        {"do": "import_curves", "kwargs": {"filepath": str(npy), "channels_file": channels, "npy_fps": 60.0,
                                           "add_audio": False}},
        {"do": "mesh", "name": "rig", "keys": rig},
        {"do": "import_curves", "kwargs": {"filepath": str(npy), "channels_file": channels, "npy_fps": 60.0,
                                           "name_map_file": str(tmp_path / "rig_map.txt"), "add_audio": False}},
        {"do": "mesh", "name": "again", "keys": pascal},  # the same audio again: one strip, moved
        {"do": "import_curves", "kwargs": {"filepath": str(csv), "start_frame": 10, "audio": str(speech)}},
        {"do": "activate", "name": "arkit"},
        {"do": "import_curves", "kwargs": {"filepath": str(js), "mode": "ADD", "gain": 0.5, "start_frame": 30,
                                           "channel_subset": "jawOpen, mouthFunnel", "add_audio": False}},
        {"do": "dump"},
    ])  # fmt: skip
    reports = [r for r in results if "result" in r]
    assert [r["result"] for r in reports] == [["FINISHED"]] * 6, reports
    assert "moved to frame 10" in reports[4]["report"]
    assert "1 shape keys with no channel: Extra" in reports[0]["report"]
    assert "12 channels with no shape key" in reports[1]["report"]  # snake has the first 40 keys only
    assert "3 channels on shape keys; 49 channels with no shape key" in reports[3]["report"]
    dump = results[-1]
    assert dump["fps"] == 24
    want = expected_on_frames(npy, 60.0, 24.0, list(range(52)))  # the CSV's six decimals: within 5e-7
    K = len(want)
    frames = np.arange(10, 10 + K)
    for j, name in enumerate(pascal):
        got = keyed(dump, "arkit", name)
        if name in ("JawOpen", "MouthFunnel"):  # the ADD import replaced frames 30.. at gain 0.5
            continue
        assert np.array_equal(got[:, 0], frames), name
        np.testing.assert_allclose(got[:, 1], want[:, j], atol=1e-6, err_msg=name)
        assert dump["objects"]["arkit"]["curves"][name + "#interpolation"] == ["LINEAR"]
    assert dump["strips"] == [{"name": speech.name, "frame_start": 10.0, "filepath": str(speech)}]
    # The ADD import: frames 30.. of jawOpen are the JSON's at gain 0.5, frames 10..29 the CSV's.
    jaw = keyed(dump, "arkit", "JawOpen")
    added = expected_on_frames(npy, 60.0, 24.0, [ARKIT_52.index("jawOpen")])[:, 0] * 0.5
    assert np.array_equal(jaw[:, 0], np.arange(10, 30 + len(added)))
    np.testing.assert_allclose(jaw[:20, 1], want[:20, pascal.index("JawOpen")], atol=1e-6)
    np.testing.assert_allclose(jaw[20:, 1], added, atol=1e-6)
    # JSON through snake_case names, npy with its channel list, a custom rig through a name map
    for obj, names in (("snake", snake[:40]), ("npy", pascal)):
        want = expected_on_frames(npy, 60.0, 24.0, list(range(len(names))))
        for j, name in enumerate(names):
            got = keyed(dump, obj, name)
            assert np.array_equal(got[:, 0], np.arange(1, 1 + len(want))), (obj, name)
            np.testing.assert_allclose(got[:, 1], want[:, j], atol=1e-6, err_msg=f"{obj} {name}")
    want = expected_on_frames(npy, 60.0, 24.0, [ARKIT_52.index(c) for c in ("jawOpen", "mouthFunnel", "eyeBlinkLeft")])
    for j, name in enumerate(rig):
        np.testing.assert_allclose(keyed(dump, "rig", name)[:, 1], want[:, j], atol=1e-6)


def test_bad_inputs_are_one_message_and_change_nothing(addon_zip, predicted, tmp_path):
    (tmp_path / "other.csv").write_text("frame,jaw\n0,0.5\n1,0.6\n")
    csv = str(predicted.with_suffix(".csv"))
    whole = predicted.with_suffix(".npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(whole[: len(whole) // 2])  # a copy that stopped half-way
    channels = str(predicted.parent / "channels.txt")
    results = run_blender(addon_zip, tmp_path, [
        {"do": "mesh", "name": "face", "keys": [pascal_case(n) for n in ARKIT_52]},
        {"do": "import_curves", "kwargs": {"filepath": csv, "add_audio": False}},
        {"do": "dump"},
        {"do": "import_curves", "kwargs": {"filepath": str(tmp_path / "other.csv")}},
        {"do": "import_curves", "kwargs": {"filepath": csv, "channel_subset": "jawOpen,noSuchCurve"}},
        {"do": "import_curves", "kwargs": {"filepath": csv, "audio": str(tmp_path / "missing.wav")}},
        {"do": "import_curves", "kwargs": {"filepath": csv, "audio": csv}},
        {"do": "import_curves", "kwargs": {"filepath": str(tmp_path / "cut.npy"), "channels_file": channels}},
        {"do": "mesh", "name": "plain", "keys": []},
        {"do": "import_curves", "kwargs": {"filepath": csv}},
        {"do": "deselect"},
        {"do": "import_curves", "kwargs": {"filepath": csv}},
        {"do": "dump"},
    ])  # fmt: skip
    before, after = results[2], results[-1]
    errors = [r for r in results[3:] if r.get("result") == ["CANCELLED"]]
    assert len(errors) == 7, results
    problems = ("not a Live Link Face CSV", "no channel(s) noSuchCurve in", "missing.wav: no such audio",
                "line.csv: not a sound file Blender can play", "shorter than its header",
                "'plain' has no shape keys", "no active object")  # fmt: skip
    for e, problem in zip(errors, problems, strict=True):
        assert problem in e["error"] and "\n" not in e["error"].strip() and "Traceback" not in e["error"], e
        assert e["report"].startswith("ERROR: ")
    assert after["actions"] == before["actions"] == 1 and after["strips"] == before["strips"] == []
    assert after["objects"]["face"] == before["objects"]["face"]


@pytest.fixture(scope="module")
def server(live_checkpoint):
    s = ServerProcess(live_checkpoint, "--token", TOKEN)
    yield s
    s.stop()


def test_a_server_and_a_live_session(addon_zip, server, live_checkpoint, speech, tmp_path):
    """/v1/animate gives what predict's CSV gives; a live session's frames are keyed as they came;
    a server that is down or refuses the token is one message."""
    out = tmp_path / "pred"
    r = subprocess.run(
        [sys.executable, "-m", "blendsync.train.cli", "predict", str(speech), "--checkpoint", str(live_checkpoint),
         "--out", str(out), "--no-plot"], capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    keys = [pascal_case(n) for n in ARKIT_52]
    served = {"server_url": server.url, "token": TOKEN, "add_audio": False}
    results = run_blender(addon_zip, tmp_path, [
        {"do": "scene_fps", "fps": 60},
        {"do": "mesh", "name": "from_csv", "keys": keys},
        {"do": "import_curves", "kwargs": {"filepath": str(out / "line.csv"), "add_audio": False}},
        {"do": "mesh", "name": "from_server", "keys": keys},
        {"do": "animate_audio", "kwargs": {"filepath": str(speech), **served}},
        {"do": "animate_audio", "kwargs": {"filepath": str(speech), **served, "token": "wrong"}},
        {"do": "animate_audio", "kwargs": {"filepath": str(speech), **served,
                                           "server_url": f"http://127.0.0.1:{free_port()}"}},
        {"do": "mesh", "name": "live", "keys": keys},
        {"do": "live", "kwargs": {"filepath": str(speech), "server_url": server.url, "token": TOKEN,
                                  "record": True, "start_frame": 1}},
        {"do": "live", "kwargs": {"filepath": str(speech), "server_url": server.url, "token": "wrong"}},
        {"do": "mesh", "name": "stopped", "keys": keys},
        {"do": "live", "stop_after": 30, "kwargs": {"filepath": str(speech), "server_url": server.url,
                                                    "token": TOKEN, "record": True, "gain": 0.5}},
        {"do": "dump"},
    ])  # fmt: skip
    assert results[2]["result"] == results[4]["result"] == ["FINISHED"], results[:5]
    assert "refused the token (401" in results[5]["error"] and results[5]["report"].startswith("ERROR")
    assert "cannot reach the server" in results[6]["error"]
    dump = results[-1]
    for name in keys:
        a, b = keyed(dump, "from_csv", name), keyed(dump, "from_server", name)
        assert np.array_equal(a[:, 0], b[:, 0]), name
        np.testing.assert_allclose(a[:, 1], b[:, 1], atol=2e-6, err_msg=name)
    live = results[8]
    assert live["result"] == ["FINISHED"] and live["state"] == "ended", live
    log = live["log"]
    assert len(log) == live["applied"] > 0.9 * 60 * sf.info(speech).duration
    assert [f[0] for f in log] == list(range(len(log)))  # every frame, in order
    for name in keys:
        got = keyed(dump, "live", name)
        j = live["channels"].index(name[0].lower() + name[1:])
        assert np.array_equal(got[:, 0], [1 + f[0] for f in log]), name
        np.testing.assert_allclose(got[:, 1], [f[2][j] for f in log], atol=1e-6, err_msg=name)
    assert "refused the token" in results[9]["error"]
    # Stop mid-session: the session ends cleanly, what came is kept, the server closes its end.
    stopped = results[11]
    assert stopped["state"] == "stopped" and 30 <= stopped["applied"] < len(log), stopped["state"]
    assert len(keyed(dump, "stopped", "JawOpen")) == stopped["applied"] == len(stopped["log"])
    # What the viewport shows while the session runs: the latest frame's values times the gain.
    for obj, session, gain in (("live", live, 1.0), ("stopped", stopped, 0.5)):
        applied, values = session["shown"]
        latest = session["log"][applied - 1][2]
        for name in keys:
            j = session["channels"].index(name[0].lower() + name[1:])
            assert values[name] == pytest.approx(min(1.0, latest[j] * gain), abs=1e-6), (obj, name)
            if obj == "stopped":
                np.testing.assert_allclose(keyed(dump, obj, name)[:, 1], [f[2][j] * gain for f in session["log"]],
                                           atol=1e-6)  # fmt: skip
    assert json.loads(urllib.request.urlopen(server.url + "/healthz", timeout=10).read())["sessions"] == 0
    assert server.alive()
    assert dump["actions"] == 4  # from_csv, from_server, live, stopped: the refused requests made none
    assert "menu_import" in dump["import_menu"]  # File > Import > blendsync curves


@pytest.mark.filterwarnings("ignore:Reading `.npy`:UserWarning")  # the rig's arrays were saved by Python 2
def test_a_custom_rig_from_its_channel_list(addon_zip, shared_data, tmp_path):
    """The custom-rig speaker's captured curves (116 channels, float64 .npy at 30 fps) on a mesh
    whose keys carry an exporter's prefix, the scene set to the file's rate."""
    rig = shared_data / "custom_rig"
    names = read_channel_list(rig / "channel_names.txt")
    results = run_blender(addon_zip, tmp_path, [
        {"do": "mesh", "name": "rig", "keys": [f"blendShape1.{n}" for n in names]},
        {"do": "import_curves", "kwargs": {"filepath": str(rig / "bs_value_1114_3_16.npy"), "npy_fps": 30.0,
                                           "channels_file": str(rig / "channel_names.txt"), "set_scene_fps": True,
                                           "add_audio": False}},
        {"do": "dump"},
    ])  # fmt: skip
    assert results[1]["result"] == ["FINISHED"], results[1]
    assert f"{len(names)} channels on shape keys" in results[1]["report"] and "no channel" not in results[1]["report"]
    dump = results[-1]
    assert dump["fps"] == 30
    want = np.load(rig / "bs_value_1114_3_16.npy")
    for j, n in enumerate(names):
        got = keyed(dump, "rig", f"blendShape1.{n}")
        assert np.array_equal(got[:, 0], np.arange(1, 1 + len(want))), n
        np.testing.assert_allclose(got[:, 1], want[:, j], atol=1e-6, err_msg=n)


def test_the_python_on_the_blender_page_runs_in_blender(addon_zip, predicted, speech, tmp_path):
    from tests.test_docs import _fenced

    shutil.copy(predicted.with_suffix(".csv"), tmp_path / "take01.csv")
    shutil.copy(speech, tmp_path / "take01.wav")
    blocks = _fenced((REPO / "docs" / "blender.md").read_text(), languages=("python",))
    assert blocks
    plan = [{"do": "mesh", "name": "face", "keys": [pascal_case(n) for n in ARKIT_52]}]
    plan += [{"do": "exec", "name": f"blender.md:python:{i}", "code": b} for i, b in enumerate(blocks)]
    dump = run_blender(addon_zip, tmp_path, [*plan, {"do": "dump"}], cwd=tmp_path)[-1]
    assert len(dump["objects"]["face"]["curves"]) == 2 * 52  # each key's curve and its interpolation
    assert [(s["name"], s["frame_start"]) for s in dump["strips"]] == [("take01.wav", 1.0)]


def test_live_link_face_packets_drive_the_keys(addon_zip, live_checkpoint, speech, tmp_path):
    """`bstrain stream --to` sends Live Link Face packets through a relay (which keeps a copy)
    to the add-on listening in Blender; the keys it records equal the packets' curves as
    pylivelinkface decodes them (an independent decoder: Unreal's order by name), frame for
    frame. A datagram that is not a packet and a packet of another subject are ignored."""
    import socket
    import threading
    import time

    pylivelinkface = pytest.importorskip("pylivelinkface")
    from blendsync.train.inference.livelink import encode_packet

    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.settimeout(0.2)
    port = free_port()
    keys = [pascal_case(n) for n in ARKIT_52]
    plan = [
        {"do": "scene_fps", "fps": 60},
        {"do": "mesh", "name": "face", "keys": keys},
        {"do": "live", "marker": str(tmp_path / "listening"), "idle_s": 3.0, "timeout_s": 120.0,
         "kwargs": {"source": "LIVELINK", "port": port, "listen_host": "127.0.0.1", "subject": "take",
                    "record": True, "start_frame": 1}},
        {"do": "dump"},
    ]  # fmt: skip
    done = threading.Event()
    packets: list[bytes] = []

    def forward():
        while not done.is_set():
            try:
                data = relay.recv(65536)
            except TimeoutError:
                continue
            packets.append(data)
            relay.sendto(data, ("127.0.0.1", port))

    # Another file opened while listening stops the session and frees the port.
    plan[2:2] = [
        {"do": "save", "path": str(tmp_path / "scene.blend")},
        {"do": "live_start", "kwargs": {"source": "LIVELINK", "port": port, "listen_host": "127.0.0.1"}},
        {"do": "open", "path": str(tmp_path / "scene.blend")},
    ]
    thread = threading.Thread(target=forward, daemon=True)
    blender = threading.Thread(target=lambda: results.append(run_blender(addon_zip, tmp_path, plan)), daemon=True)
    results: list = []
    blender.start()
    deadline = time.monotonic() + 120
    while not (tmp_path / "listening").exists() and time.monotonic() < deadline and blender.is_alive():
        time.sleep(0.1)
    assert (tmp_path / "listening").exists(), "Blender did not start listening"
    thread.start()
    to_blender = ("127.0.0.1", port)
    relay.sendto(b"not a packet", to_blender)
    relay.sendto(encode_packet("$" + "0" * 36, "other", 5, 60, np.full(61, 0.5)), to_blender)
    r = subprocess.run(
        [sys.executable, "-m", "blendsync.train.cli", "-q", "stream", str(speech), "--checkpoint", str(live_checkpoint),
         "--to", f"127.0.0.1:{relay.getsockname()[1]}", "--subject", "take", "--fps", "60"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    blender.join(180)
    done.set()
    thread.join()
    relay.close()
    opened, live, dump = results[0][4], results[0][5], results[0][6]
    assert "another file was loaded: session stopped" in opened["status"] and not opened["active"], opened
    assert live["result"] == ["FINISHED"] and live["ignored"] == 2, live  # the same port, free again
    decoded = [pylivelinkface.PyLiveLinkFace.decode(p)[1] for p in packets]
    assert len(decoded) == len(live["log"]) > 0.9 * 60 * sf.info(speech).duration
    frames = [1 + f[0] for f in live["log"]]
    assert frames == list(range(1, 1 + len(decoded)))  # every packet, in order, one frame apart
    for name in keys:
        shape = pylivelinkface.FaceBlendShape[name]
        got = keyed(dump, "face", name)
        assert np.array_equal(got[:, 0], frames), name
        np.testing.assert_allclose(got[:, 1], [f.get_blendshape(shape) for f in decoded], atol=1e-6, err_msg=name)
