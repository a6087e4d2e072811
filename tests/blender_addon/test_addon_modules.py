"""The add-on's modules that need no Blender (blendsync.blender_addon: Blender's own Python
runs them without numpy), checked against blendsync's own readers and numpy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blendsync.blender_addon.curve_files import CurveFileError, read_channel_list, read_curves, read_livelink_csv
from blendsync.blender_addon.names import match, read_name_map, reduced
from blendsync.blender_addon.timing import on_frames, rate_for_scene
from blendsync.shared.channels import ARKIT, ARKIT_52, pascal_case
from blendsync.shared.targets import read_livelink_csv as blendsync_livelink_csv
from blendsync.train.inference.outputs import curves_json, livelink_csv


@pytest.mark.parametrize(
    "spelling",
    ["jawOpen", "JawOpen", "jaw_open", "Jaw_Open", "JAW-OPEN", "blendShape1.jawOpen", "Face:jawOpen", "A25_Jaw_Open"],
)
def test_arkit_spellings_reduce_alike(spelling):
    assert reduced(spelling) == "jawopen"


@pytest.mark.parametrize("spelling", ["eyeBlink_L", "EyeBlinkLeft", "eye_blink_left", "eye_blink.L", "BS.eyeBlink_L"])
def test_sides_spelt_short_are_left_and_right(spelling):
    assert reduced(spelling) == "eyeblinkleft"


def test_match_reports_both_sides_and_never_drives_a_key_twice():
    keys = ["Basis", "JawOpen", "jaw_open", "EyeBlinkLeft", "Extra"]
    m = match(["jawOpen", "eyeBlinkLeft", "tongueOut"], keys, basis="Basis")
    assert m.pairs == {"jawOpen": "JawOpen", "eyeBlinkLeft": "EyeBlinkLeft"}
    assert m.unmatched_channels == ("tongueOut",)
    assert m.unused_keys == ("jaw_open", "Extra")
    assert "1 channels with no shape key: tongueOut" in m.report()
    # exact: spelling counts; an equal name wins over a reduced one
    assert match(["jawOpen"], ["Basis", "JawOpen"], "exact", basis="Basis").pairs == {}
    assert match(["jaw_open"], ["Basis", "JawOpen", "jaw_open"], basis="Basis").pairs == {"jaw_open": "jaw_open"}


def test_a_name_map_file_maps_a_custom_rig(tmp_path):
    f = tmp_path / "map.txt"
    f.write_text("# rig -> mesh\nmouth_suck_dl = LipSuckDL\njaw_open,Jaw\n\n")
    m = match(
        ["mouth_suck_dl", "jaw_open", "brow"], ["Basis", "LipSuckDL", "Jaw"], user_map=read_name_map(f), basis="Basis"
    )
    assert m.pairs == {"mouth_suck_dl": "LipSuckDL", "jaw_open": "Jaw"}
    for text, problem in (("a b c\n", "line 1: expected 'channel = shape key'"), ("a=b\na=c\n", "mapped twice"),
                          ("# only\n", "no 'channel = shape key' lines")):  # fmt: skip
        f.write_text(text)
        with pytest.raises(CurveFileError, match=problem):
            read_name_map(f)


def _curves(T=90, C=52, seed=0):
    return np.random.default_rng(seed).random((T, C)).astype(np.float32)


def test_csv_json_and_npy_read_the_values_predict_writes(tmp_path):
    c = _curves()
    (tmp_path / "a.csv").write_bytes(livelink_csv(c, 30.0, list(ARKIT_52)))
    (tmp_path / "a.json").write_bytes(curves_json(c, 30.0, list(ARKIT_52), "a.wav"))
    np.save(tmp_path / "a.npy", c)
    (tmp_path / "names.txt").write_text("52\n" + "\n".join(ARKIT_52) + "\n")
    csv_, js, npy = (read_curves(tmp_path / "a.csv"), read_curves(tmp_path / "a.json"),
                     read_curves(tmp_path / "a.npy", tmp_path / "names.txt", 30.0))  # fmt: skip
    assert csv_.channels == tuple(map(pascal_case, ARKIT_52)) and js.channels == npy.channels == ARKIT_52
    for r in (csv_, js):
        np.testing.assert_allclose(np.array(r.rows), c, atol=5e-7)
        np.testing.assert_allclose(r.times, np.arange(90) / 30, atol=1e-6)
        assert r.fps == pytest.approx(30.0, rel=1e-4)
    assert np.array_equal(np.array(npy.rows, np.float32), c)


def test_real_captures_are_timed_as_blendsync_times_them(shared_data):
    for name in ("livelinkface/MySlate_161_iPhone_cal.csv", "generated/model_output_shapes_68col.csv"):
        mine = read_livelink_csv(shared_data / name)
        theirs = blendsync_livelink_csv(shared_data / name, ARKIT)
        assert len(mine.channels) == 52, name  # rotations and emotion scores are not shape keys
        np.testing.assert_allclose(mine.times, theirs.times, atol=1e-6, err_msg=name)
        order = [mine.channels.index(pascal_case(c)) for c in ARKIT_52]
        np.testing.assert_allclose(np.array(mine.rows)[:, order], theirs.values, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "name, text, problem",
    [
        ("x.csv", "time,jawOpen\n0,1\n", "not a Live Link Face CSV"),
        ("x.csv", "Timecode,BlendshapeCount,JawOpen\n00:00:00:00.000,61,0.1\n", "at least 2 rows"),
        ("x.csv", "Timecode,BlendshapeCount,JawOpen\n00:00:00:00.000,61,0.1\nnoon,61,0.2\n", "line 3: not a timecode"),
        ("x.csv", "Timecode,BlendshapeCount,JawOpen\n00:00:00:00.000,61,nan\n00:00:00:01.000,61,0.2\n", "line 2"),
        ("x.json", '{"fps": 30, "channels": ["a"], "values": [[0.1, 0.2]]}', "row 0 is not a list of 1 numbers"),
        ("x.json", "[1, 2]", "not a blendsync curves JSON"),
        ("x.txt", "", "not a curve file"),
    ],
)
def test_bad_curve_files_are_one_line_naming_the_file(tmp_path, name, text, problem):
    (tmp_path / name).write_text(text)
    with pytest.raises(CurveFileError, match=problem) as e:
        read_curves(tmp_path / name)
    assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def test_npy_needs_its_channels_and_matching_columns(tmp_path):
    np.save(tmp_path / "a.npy", _curves(10, 3))
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(CurveFileError, match="give its channel list"):
        read_curves(tmp_path / "a.npy")
    with pytest.raises(CurveFileError, match="3 columns but the channel list names 2"):
        read_curves(tmp_path / "a.npy", tmp_path / "two.txt")
    np.save(tmp_path / "b.npy", np.zeros((4, 2), np.int16))
    with pytest.raises(CurveFileError, match="dtype"):
        read_curves(tmp_path / "b.npy", tmp_path / "two.txt")


@given(
    fps_in=st.sampled_from([24.0, 30.0, 59.94, 60.0]),
    fps_out=st.sampled_from([23.976, 24.0, 25.0, 30.0, 60.0]),
    T=st.integers(2, 200),
    gain=st.floats(0.0, 2.0),
)
def test_on_frames_is_linear_interpolation_in_time(tmp_path_factory, fps_in, fps_out, T, gain):
    c = _curves(T, 3, seed=T)
    d = tmp_path_factory.mktemp("j") / "c.json"
    d.write_text(json.dumps({"fps": fps_in, "channels": ["a", "b", "c"], "values": c.tolist()}))
    curves = read_curves(d)
    got = np.array(on_frames(curves, fps_out, [2, 0], gain))
    t = np.arange(len(got)) / fps_out
    assert t[-1] <= curves.duration_s + 1e-6 < t[-1] + 1 / fps_out + 1e-6  # every scene frame within the file
    want = np.stack([np.interp(t, curves.times, c[:, j].astype(np.float64)) for j in (2, 0)], axis=1) * gain
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_rates_for_the_scene(shared_data):
    assert rate_for_scene(30.0) == (30, 1.0) and rate_for_scene(59.94) == (60, 1.001)
    assert rate_for_scene(29.97) == (30, 1.001) and rate_for_scene(37.0) == (37, 1.0)
    # Real Live Link Face takes run at about 59.9 fps: the scene gets the nearest preset, 59.94
    for name in ("MySlate_161_iPhone_cal.csv", "Happy.csv"):
        assert rate_for_scene(read_livelink_csv(shared_data / "livelinkface" / name).fps) == (60, 1.001)


def test_a_closer_match_is_never_taken_by_a_looser_one():
    # "jaw_open" reduces like both keys; "jawOpen" is equal to one of them and keeps it.
    m = match(["jaw_open", "jawOpen"], ["Basis", "jawOpen", "JAW_OPEN"], basis="Basis")
    assert m.pairs == {"jaw_open": "JAW_OPEN", "jawOpen": "jawOpen"}


def test_a_custom_rig_behind_an_exporters_prefix(shared_data):
    # The FACEGOOD rig has names that reduce alike (tongue_Scale_X, tongue_Scale__X): the
    # prefix-stripped pass pairs each with its own key before names are reduced.
    names = read_channel_list(shared_data / "custom_rig" / "channel_names.txt")
    m = match(names, ["Basis", *(f"blendShape1.{n}" for n in names)], basis="Basis")
    assert m.pairs == {n: f"blendShape1.{n}" for n in names} and m.unused_keys == ()


def test_blender_side_suffixes_and_copies_are_not_prefixes():
    m = match(["Blink.L", "Smile.L"], ["Basis", "Face.Smile.L", "Face.Blink.L"], basis="Basis")
    assert m.pairs == {"Blink.L": "Face.Blink.L", "Smile.L": "Face.Smile.L"}
    assert match(["Brow.L", "Eye.L"], ["eye.L", "brow.L"]).pairs == {"Brow.L": "brow.L", "Eye.L": "eye.L"}
    assert match(["jawOpen"], ["jawOpen.001"]).pairs == {}  # a copy is not the key


def test_a_name_map_line_that_matches_nothing_is_reported():
    m = match(["jawOpen"], ["Basis", "JawOpen"], user_map={"jawOpen": "Jaww", "tongue": "Tongue"}, basis="Basis")
    assert m.pairs == {"jawOpen": "JawOpen"}
    assert "jawOpen = Jaww (no shape key Jaww)" in m.report() and "tongue = Tongue (no channel tongue)" in m.report()


def test_timing_follows_blendsyncs_rules_on_irregular_clocks(tmp_path):
    """Repeated rows beyond 5% of the intervals make a clock irregular (re-spaced), rows out of
    order are sorted first: the add-on times a take as blendsync's reader does."""
    from blendsync.shared.channels import ChannelSet

    rng = np.random.default_rng(3)
    t = np.arange(200) / 60.0
    t = np.insert(t, rng.choice(np.arange(1, 200), 17, replace=False), np.nan)  # 8% repeated rows
    t = np.where(np.isnan(t), np.roll(t, 1), t)
    t[[50, 51]] = t[[51, 50]]  # one pair out of order

    def tc(x):  # noqa: E306
        return f"00:00:{int(x) // 1:02d}:{(x - int(x)) * 60:06.3f}"

    lines = ["Timecode,BlendshapeCount,JawOpen"] + [f"{tc(x)},61,{v:.6f}" for x, v in zip(t, rng.random(len(t)))]
    (tmp_path / "irregular.csv").write_text("\n".join(lines) + "\n")
    mine = read_livelink_csv(tmp_path / "irregular.csv")
    theirs = blendsync_livelink_csv(tmp_path / "irregular.csv", ChannelSet(name="one", channels=("jawOpen",)))
    np.testing.assert_allclose(mine.times, theirs.times, atol=1e-9)
    np.testing.assert_allclose(np.array(mine.rows)[:, 0], theirs.values[:, 0], atol=1e-6)


@pytest.mark.parametrize(
    "data, problem",
    [
        (lambda a: a[: len(a) - 40], "shorter than its header"),
        (lambda a: a[:8] + b"\x10\x00" + b"(1, 2)".ljust(16), "unreadable .npy header"),
        (lambda a: a[:12], "unreadable .npy header"),
    ],
)
def test_a_corrupt_npy_is_one_line(tmp_path, data, problem):
    np.save(tmp_path / "ok.npy", _curves(10, 2))
    (tmp_path / "bad.npy").write_bytes(data((tmp_path / "ok.npy").read_bytes()))
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(CurveFileError, match=problem):
        read_curves(tmp_path / "bad.npy", tmp_path / "two.txt")


def test_a_server_answer_that_is_not_an_object_is_one_line():
    from blendsync.blender_addon.curve_files import curves_from_doc

    with pytest.raises(CurveFileError, match="not a JSON object of curves"):
        curves_from_doc([1, 2], "http://x")


def test_the_addons_arkit_names_and_packets_are_blendsyncs():
    """Blender cannot import blendsync, so the add-on keeps its own copy of the ARKit names and
    the packet layout: both must stay what blendsync sends."""
    from blendsync.blender_addon.livelink_udp import ARKIT_52 as ADDON_ARKIT
    from blendsync.blender_addon.livelink_udp import UNREAL_52, decode_packet
    from blendsync.shared.channels import CHANNEL_ORDERS
    from blendsync.train.inference.livelink import encode_packet

    assert tuple(ADDON_ARKIT) == ARKIT_52 and UNREAL_52 == CHANNEL_ORDERS["unreal"]
    values = np.linspace(0, 1, 61)
    subject, frame, sub, fps, curves = decode_packet(encode_packet("$" + "1" * 36, "take", 42, 60, values, 0.25))
    assert (subject, frame, sub, fps) == ("take", 42, 0.25, 60.0)
    np.testing.assert_allclose(curves, values[:52], atol=1e-7)
