from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from blendsync.shared.channels import ARKIT, ARKIT_52, ChannelSet, read_channel_file
from blendsync.shared.config import FeatureConfig
from blendsync.shared.featurize_file import featurize_file
from blendsync.shared.targets import (
    TargetError,
    TargetSpec,
    parse_timecode,
    read_targets,
    targets_on_grid,
)
from tests.helpers import write_livelink


def test_parse_timecode_frames_at_60fps_with_fraction():
    assert parse_timecode("00:00:00:00.000") == 0.0
    assert parse_timecode("00:00:01:30.000") == pytest.approx(1.5)
    assert parse_timecode("18:43:58:59.723") == pytest.approx(18 * 3600 + 43 * 60 + 58 + 59.723 / 60)
    with pytest.raises(ValueError, match="not a timecode"):
        parse_timecode("12:00")


def test_every_real_livelink_file_parses(shared_data):
    files = sorted((shared_data / "livelinkface").glob("*.csv"))
    assert len(files) == 4
    for f in files:
        c = read_targets(TargetSpec(f), ARKIT)
        assert c.values.shape[1] == 52
        # Real takes run at ~59.9 fps; per-row stamps are kept (no jitter fallback).
        assert 59.5 < c.fps < 60.1 and not c.notes
        assert np.all(np.diff(c.times) > 0)


def test_real_take_duration_uses_timestamps_not_frame_count(shared_data):
    c = read_targets(TargetSpec(shared_data / "livelinkface" / "Happy.csv"), ARKIT)
    # 14:58:02:44.643 - 14:58:53:34.503 is 50.83 s; 3046 frames / 60 would be 50.77 s.
    assert c.times[-1] == pytest.approx(50.0 + (34.503 - 44.643) / 60 + 1.0, abs=1e-6)


def test_generated_file_with_jitter_falls_back_to_uniform_spacing(shared_data, caplog):
    f = shared_data / "generated" / "model_output_shapes_68col.csv"
    with caplog.at_level(logging.WARNING):
        c = read_targets(TargetSpec(f), ARKIT)
    assert c.values.shape == (610, 52)
    assert "jitter" in caplog.text and c.notes
    assert np.allclose(np.diff(c.times), 1 / c.fps)
    # Extra emotion columns (Angry, Happy, ...) are ignored, not read as curves.
    assert 55 < c.fps < 62


def test_columns_parsed_by_name_not_position(tmp_path):
    f = write_livelink(tmp_path / "a.csv", 2.0, count_column="BlendShapeCount")
    lines = f.read_text().splitlines()
    header = lines[0].split(",")
    # Swap two curve columns and move Timecode to the end: values must follow the names.
    order = list(range(len(header)))
    j, m = header.index("JawOpen"), header.index("MouthFunnel")
    order[j], order[m] = m, j
    order = order[1:] + [0]
    f2 = tmp_path / "b.csv"
    f2.write_text("\n".join(",".join(ln.split(",")[i] for i in order) for ln in lines) + "\n")
    a = read_targets(TargetSpec(f), ARKIT)
    b = read_targets(TargetSpec(f2), ARKIT)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_allclose(a.times, b.times)


def test_zero_based_and_wall_clock_timecodes_agree(tmp_path):
    a = read_targets(TargetSpec(write_livelink(tmp_path / "a.csv", 3.0, start="00:00:00:00.000")), ARKIT)
    b = read_targets(TargetSpec(write_livelink(tmp_path / "b.csv", 3.0, start="23:59:58:30.250")), ARKIT)
    np.testing.assert_allclose(a.times, b.times, atol=1e-6)  # across midnight too
    np.testing.assert_array_equal(a.values, b.values)


def test_missing_channel_column_names_it(tmp_path):
    f = write_livelink(tmp_path / "a.csv", 1.0)
    lines = f.read_text().splitlines()
    lines[0] = lines[0].replace("JawOpen", "JawOpened")
    f.write_text("\n".join(lines))
    with pytest.raises(TargetError, match=r"a\.csv.*missing 1 of 52.*jawOpen"):
        read_targets(TargetSpec(f), ARKIT)


def test_bad_value_names_the_line(tmp_path):
    f = write_livelink(tmp_path / "a.csv", 1.0)
    lines = f.read_text().splitlines()
    lines[5] = lines[5].replace("0.", "x.", 1)
    f.write_text("\n".join(lines))
    with pytest.raises(TargetError, match="line 6"):
        read_targets(TargetSpec(f), ARKIT)


def test_npy_npz_and_hdf5_targets(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.uniform(0, 1, (90, 52))
    np.save(tmp_path / "a.npy", arr)
    np.savez(tmp_path / "b.npz", curves=arr, fps=np.array(30.0))
    with h5py.File(tmp_path / "c.h5", "w") as h:
        ds = h.create_dataset("take/curves", data=arr)
        ds.attrs["fps"] = 30.0
    a = read_targets(TargetSpec(tmp_path / "a.npy", fps=30.0), ARKIT)
    b = read_targets(TargetSpec.parse("b.npz", tmp_path), ARKIT)
    c = read_targets(TargetSpec.parse("c.h5:/take/curves", tmp_path), ARKIT)
    for x in (a, b, c):
        np.testing.assert_array_equal(x.values, arr)
        assert x.fps == 30.0 and x.duration_s == pytest.approx(3.0)
    with pytest.raises(TargetError, match="no frame rate"):
        read_targets(TargetSpec(tmp_path / "a.npy"), ARKIT)
    with pytest.raises(TargetError, match="name the dataset"):
        read_targets(TargetSpec(tmp_path / "c.h5"), ARKIT)
    with pytest.raises(TargetError, match="53 channels"):
        np.save(tmp_path / "d.npy", np.zeros((10, 53)))
        read_targets(TargetSpec(tmp_path / "d.npy", fps=30.0), ARKIT)


def test_resampling_by_time_and_clipping():
    from blendsync.shared.targets import TargetCurves

    t = np.arange(120) / 60.0
    vals = np.stack([t / 2, 1.5 * np.ones_like(t)], axis=1)  # a ramp and an out-of-range line
    g = targets_on_grid(TargetCurves(values=vals, times=t, fps=60.0, source_format="npy"), 30.0, 60)
    np.testing.assert_allclose(g.values[:, 0], np.arange(60) / 30.0 / 2, atol=1e-6)
    assert (g.values[:, 1] == 1.0).all() and g.counts["targets_clipped_values"] == 60


def test_custom_rig_featurizes_with_116_channels(shared_data):
    d = shared_data / "custom_rig"
    names = read_channel_file(d / "channel_names.txt")
    assert len(names) == 116
    cfg = FeatureConfig.from_dict({"targets": {"channels_file": str(d / "channel_names.txt")}})
    assert cfg.channels.channels == names and cfg.hash != FeatureConfig().hash
    ff = featurize_file(d / "1114_3_16.wav", TargetSpec(d / "bs_value_1114_3_16.npy", fps=30.0), cfg)
    assert ff.targets.shape == (ff.frames, 116) and ff.mel.shape == (ff.frames, 80)
    assert ff.frames == pytest.approx(47.65 * 30, abs=2)
    raw = np.load(d / "bs_value_1114_3_16.npy")
    # 30 fps targets on a 30 fps grid: the values come through unchanged.
    np.testing.assert_allclose(ff.targets, raw[: ff.frames].astype(np.float32), atol=1e-6)


def test_length_mismatch_trimmed_within_tolerance_rejected_beyond(make_audio, tmp_path):
    audio = make_audio("a.wav", 4.0)
    near = write_livelink(tmp_path / "near.csv", 4.2)
    far = write_livelink(tmp_path / "far.csv", 4.5)
    cfg = FeatureConfig()
    ff = featurize_file(audio, TargetSpec(near), cfg)
    assert ff.frames == 120 and ff.targets.shape == (120, 52)
    with pytest.raises(TargetError, match=r"far\.csv.*4\.500 s.*4\.000 s.*0\.500 s > tolerance 0\.25"):
        featurize_file(audio, TargetSpec(far), cfg)
    lenient = FeatureConfig.from_dict({"targets": {"max_mismatch_s": 1.0}})
    assert lenient.hash == cfg.hash
    assert featurize_file(audio, TargetSpec(far), lenient).frames == 120


def test_channel_set_checks():
    with pytest.raises(ValueError, match="repeats"):
        ChannelSet("x", ("a", "a"))
    assert len(ARKIT.mouth) + len(ARKIT.expression) + len(ARKIT.other) == 52
    assert "jawOpen" in ARKIT.mouth and "eyeBlinkLeft" in ARKIT.expression
    assert ARKIT.channels == ARKIT_52


@pytest.mark.slow
def test_custom_rig_pair_through_extract(shared_data, tmp_path):
    from blendsync.featurize.extract import extract
    from blendsync.shared.store import FeatureStore
    from tests.helpers import write_manifest

    d = shared_data / "custom_rig"
    (tmp_path / "rig.yaml").write_text(f"targets:\n  channels_file: {d / 'channel_names.txt'}\n")
    cfg = FeatureConfig.load(tmp_path / "rig.yaml")
    man = write_manifest(
        tmp_path / "rig.csv",
        [
            {
                "audio": str(d / f"1114_3_{n}.wav"),
                "targets": str(d / f"bs_value_1114_3_{n}.npy"),
                "targets_fps": 30,
                "id": f"take{n}",
            }
            for n in (15, 16)
        ],
    )
    r = extract(man, tmp_path / "f.zarr", cfg, executor="serial")
    assert r.ok and r.computed == 2
    fs = FeatureStore(tmp_path / "f.zarr")
    for key in r.keys:
        item = fs.read_item(key)
        assert item.targets.shape[1] == 116 and item.attrs.channel_set["name"] == "channel_names"


@pytest.mark.parametrize(
    "fps, words",
    [(1e-300, "got 1e-300"), (float("inf"), "got inf"), (0, "got 0"), (-5, "got -5"), ("x", "must be a number")],
)
def test_frame_rates_outside_the_range_get_one_message(tmp_path, fps, words):
    from blendsync.shared.targets import TargetError, fps_problem, read_array_targets

    msg = fps_problem(fps)
    assert msg and words in msg and "[1, 1000]" in msg or "must be a number" in msg
    arr = np.zeros((10, 3))
    np.savez(tmp_path / "t.npz", curves=arr, fps=np.array(fps if not isinstance(fps, str) else 0))
    cs = _three_channels()
    with pytest.raises(TargetError, match="frame rate must be") as e:
        read_array_targets(TargetSpec(tmp_path / "t.npz"), cs)
    assert str(e.value).count("frame rate") == 1 and len(str(e.value)) < 200
    assert fps_problem(30) is None and fps_problem("59.94") is None


def test_complex_arrays_and_hdf5_groups_are_refused_plainly(tmp_path):
    import h5py

    from blendsync.shared.targets import TargetError, read_array_targets

    np.save(tmp_path / "c.npy", np.zeros((10, 3), complex))
    with pytest.raises(TargetError, match="complex values"):
        read_array_targets(TargetSpec(tmp_path / "c.npy", fps=30.0), _three_channels())
    with h5py.File(tmp_path / "g.h5", "w") as h:
        h.create_group("takes")
    with pytest.raises(TargetError, match="'takes' is an HDF5 group, not a dataset"):
        read_array_targets(TargetSpec(tmp_path / "g.h5", key="takes", fps=30.0), _three_channels())


def _three_channels():
    from blendsync.shared.channels import ChannelSet

    return ChannelSet("three", ("a", "b", "c"))


def _rewrite(src, dst, edit):
    """The real CSV src with its data rows passed through edit(list of lines) into dst."""
    lines = src.read_text().splitlines()
    dst.write_text("\n".join([lines[0], *edit(lines[1:])]) + "\n")
    return dst


def test_rows_out_of_time_order_are_sorted_by_timecode_with_a_warning(shared_data, tmp_path, caplog):
    src = shared_data / "livelinkface" / "Happy.csv"
    rng = np.random.default_rng(0)

    def shuffle_block(rows):
        block = rows[1000:1012]
        return rows[:1000] + [block[i] for i in rng.permutation(len(block))] + rows[1012:]

    f = _rewrite(src, tmp_path / "shuffled.csv", shuffle_block)
    a = read_targets(TargetSpec(src), ARKIT)
    with caplog.at_level(logging.WARNING):
        b = read_targets(TargetSpec(f), ARKIT)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_allclose(a.times, b.times)
    assert "timecodes go backwards" in caplog.text and "sorted into time order" in caplog.text
    assert "jitter" not in caplog.text


def test_dropped_capture_frames_keep_their_timecodes_and_are_interpolated(shared_data, tmp_path, caplog):
    src = shared_data / "livelinkface" / "Happy.csv"
    gone = [500, 1200, 1201, 2000, 2900]  # 5 frames in 4 gaps
    f = _rewrite(src, tmp_path / "dropped.csv", lambda rows: [r for i, r in enumerate(rows) if i not in gone])
    a = read_targets(TargetSpec(src), ARKIT)
    with caplog.at_level(logging.WARNING):
        b = read_targets(TargetSpec(f), ARKIT)
    assert "5 capture frame(s) missing in 4 gap(s)" in caplog.text and "jitter" not in caplog.text
    kept = np.setdiff1d(np.arange(len(a.times)), gone)
    # Every kept row keeps its own time: nothing is shifted (even spacing would move rows by
    # up to 5 frames, 83 ms).
    np.testing.assert_allclose(b.times, a.times[kept], atol=1e-9)
    np.testing.assert_array_equal(b.values, a.values[kept])
    assert b.fps == pytest.approx(a.fps)
    # On the frame grid, only frames next to a gap differ from the full take.
    ga = targets_on_grid(a, 30.0, 1500).values
    gb = targets_on_grid(b, 30.0, 1500).values
    near = np.zeros(1500, bool)
    for i in gone:
        k = int(a.times[i] * 30)
        near[max(0, k - 1) : k + 2] = True
    np.testing.assert_allclose(ga[~near], gb[~near], atol=1e-6)


def test_repeated_capture_frames_are_dropped_with_a_count(shared_data, tmp_path, caplog):
    src = shared_data / "livelinkface" / "MySlate_164_iPhone_cal.csv"
    twice = {100, 101, 700, 1500, 1800}

    def double(rows):
        out = []
        for i, r in enumerate(rows):
            out += [r, r] if i in twice else [r]
        return out

    f = _rewrite(src, tmp_path / "doubled.csv", double)
    a = read_targets(TargetSpec(src), ARKIT)
    with caplog.at_level(logging.WARNING):
        b = read_targets(TargetSpec(f), ARKIT)
    assert "5 repeated row(s)" in caplog.text and "jitter" not in caplog.text
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_allclose(a.times, b.times)


def test_timecodes_that_never_increase_are_refused(tmp_path):
    f = write_livelink(tmp_path / "a.csv", 1.0)
    lines = f.read_text().splitlines()
    first_tc = lines[1].split(",")[0]
    f.write_text("\n".join([lines[0]] + [first_tc + "," + ln.split(",", 1)[1] for ln in lines[1:]]) + "\n")
    with pytest.raises(TargetError, match="timecodes do not increase"):
        read_targets(TargetSpec(f), ARKIT)
