"""Named orders of the 52 ARKit curves, checked against independent sources: the header of a
real Live Link Face capture and pylivelinkface's packet order (Unreal's EARFaceBlendShape)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from blendsync.shared.channels import (
    ARKIT_52,
    CHANNEL_ORDERS,
    EMOTION_COLUMNS,
    LIVELINK_ROTATIONS,
    pascal_case,
    reorder,
)


def test_the_livelink_order_is_the_apps_csv_header(shared_data):
    with open(shared_data / "livelinkface" / "Happy.csv", newline="") as f:
        header = next(csv.reader(f))
    assert [pascal_case(c) for c in CHANNEL_ORDERS["livelink61"]] == header[2:63]


def test_the_68_column_layout_is_the_generated_files_header(shared_data):
    with open(shared_data / "generated" / "model_output_shapes_68col.csv", newline="") as f:
        header = next(csv.reader(f))
    assert [pascal_case(c) for c in CHANNEL_ORDERS["livelink68"]] == header[2:70]


def test_the_unreal_order_is_the_live_link_packet_order():
    pylivelinkface = pytest.importorskip("pylivelinkface")
    names = [m.name for m in pylivelinkface.FaceBlendShape]
    assert [pascal_case(c) for c in CHANNEL_ORDERS["unreal61"]] == names
    assert CHANNEL_ORDERS["unreal"] != CHANNEL_ORDERS["livelink"]  # jaw and mouth Left/Right differ


def test_every_order_holds_each_curve_once():
    for name, order in CHANNEL_ORDERS.items():
        assert len(set(order)) == len(order), name
        assert set(order) - set(LIVELINK_ROTATIONS) - set(EMOTION_COLUMNS) == set(ARKIT_52), name
    assert list(CHANNEL_ORDERS["alphabetical"]) == sorted(ARKIT_52)


def test_reorder_maps_by_name_and_fills_rotations_with_zeros():
    values = np.arange(52, dtype=np.float32)[None, :] + 1  # column i holds i + 1
    out = reorder(values, ARKIT_52, "unreal61")
    assert out.shape == (1, 61)
    for j, name in enumerate(CHANNEL_ORDERS["unreal61"]):
        want = ARKIT_52.index(name) + 1 if name in ARKIT_52 else 0
        assert out[0, j] == want, name
    with pytest.raises(ValueError, match="unknown channel order"):
        reorder(values, ARKIT_52, "sideways")
    with pytest.raises(ValueError, match="does not predict"):
        reorder(values[:, :5], [f"c{i}" for i in range(5)], "unreal")


@pytest.mark.parametrize("order", ["alphabetical", "unreal", "unreal61", "livelink61", "livelink68"])
def test_arrays_in_a_named_order_are_read_by_name(shared_data, tmp_path, order):
    from blendsync.shared.channels import ARKIT
    from blendsync.shared.targets import TargetSpec, read_targets

    csv_curves = read_targets(TargetSpec(shared_data / "livelinkface" / "MySlate_164_iPhone_cal.csv"), ARKIT)
    arr = reorder(csv_curves.values, ARKIT_52, order)  # as another tool would write it
    np.save(tmp_path / "t.npy", arr)
    got = read_targets(TargetSpec(tmp_path / "t.npy", fps=60.0, order=order), ARKIT)
    np.testing.assert_array_equal(got.values, csv_curves.values)


def test_a_manifest_names_the_order_and_a_wrong_one_is_a_row_error(tmp_path, make_audio):
    from blendsync.shared.manifest import read_manifest
    from tests.helpers import write_manifest

    make_audio("a.wav", 1.0)
    np.save(tmp_path / "t.npy", np.zeros((30, 52), np.float32))
    man = write_manifest(
        tmp_path / "m.csv",
        [
            {"audio": "a.wav", "targets": "t.npy", "targets_fps": 30, "id": "one"},
            {"audio": "a.wav", "targets": "t.npy", "targets_fps": 30, "id": "two"},
        ],
    )
    text = man.read_text().splitlines()
    man.write_text("\n".join([text[0] + ",targets_order", text[1] + ",alphabetical", text[2] + ",sideways"]) + "\n")
    m = read_manifest(man)
    assert [r.targets.order for r in m.rows] == ["alphabetical"]
    assert len(m.problems) == 1 and "targets_order 'sideways'" in m.problems[0].message
