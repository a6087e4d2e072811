"""Where a store lives: local paths and file:// commit by rename, other URLs by marker."""

from __future__ import annotations

import pytest

from blendsync.shared.store import FeatureStore, StoreError, is_url


def test_paths_and_file_urls_are_local(tmp_path):
    for root in (tmp_path / "f.zarr", str(tmp_path / "f.zarr"), f"file://{tmp_path}/f.zarr"):
        fs = FeatureStore(root)
        assert fs.is_local and fs.location == str(tmp_path / "f.zarr")
    rel = FeatureStore("features.zarr")
    assert rel.is_local and rel.location.endswith("/features.zarr") and rel.location.startswith("/")


def test_url_detection():
    assert is_url("s3://b/k") and is_url("gs://b/k") and is_url("memory://x") and is_url("simplecache::s3://b")
    assert not is_url("features.zarr") and not is_url("/abs/path") and not is_url("C:/data")


def test_memory_url_store_round_trip():
    fs = FeatureStore("memory://bs-test-store/features.zarr")
    fs.init()
    assert not fs.is_local and fs.exists() and fs.item_keys() == [] and fs.index_names() == []
    fs.write_index("m", {"entries": [{"row": 1}]})
    assert fs.index_names() == ["m"] and fs.read_index("m")["entries"] == [{"row": 1}]
    fs.write_bytes(".bsfeat/x.json", b"{}")
    assert fs.read_bytes(".bsfeat/x.json") == b"{}" and fs.read_bytes(".bsfeat/nope") is None
    with pytest.raises(StoreError, match="no local directory"):
        _ = fs.staging_dir


def test_unknown_protocol_and_foreign_directories_are_refused(tmp_path):
    with pytest.raises(StoreError, match="cannot open this URL"):
        FeatureStore("nosuchproto://x/y")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "other.txt").write_text("x")
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tmp_path / "d").init()


def test_read_items_keeps_order_and_equals_read_item(tmp_path):
    import numpy as np

    from tests.helpers import make_random_store

    fs, keys = make_random_store(tmp_path / "s.zarr", [7, 30, 1, 12, 5, 9], channels=3)
    for ahead in (1, 2, 4, 10):
        got = list(fs.read_items(keys, ahead=ahead))
        assert [it.key for it in got] == keys
        for it in got:
            ref = fs.read_item(it.key)
            np.testing.assert_array_equal(it.mel, ref.mel)
            np.testing.assert_array_equal(it.targets, ref.targets)
    assert [it.key for it in fs.iter_items()] == sorted(keys)


def test_object_store_reads_refuse_an_item_that_no_longer_matches_its_checksums():
    """Without an atomic swap, an item rewritten under a reader would read as fill values:
    object-store reads check the recorded checksums and say so."""
    import uuid

    import numpy as np
    import zarr

    from tests.helpers import make_random_store

    fs, keys = make_random_store(f"memory://bs-{uuid.uuid4().hex[:8]}/s.zarr", [20, 30], channels=3)
    assert not fs.is_local
    ok = fs.read_item(keys[0])
    arr = zarr.open_array(fs.zarr_location(f"items/{keys[1]}/mel"), mode="r+")
    arr[:5] = 0.0  # what a half-rewritten item reads as: missing chunks come back as fill values
    with pytest.raises(StoreError, match=f"item {keys[1]} does not match its checksums \\(mel\\)"):
        fs.read_item(keys[1])
    np.testing.assert_array_equal(fs.read_item(keys[0]).mel, ok.mel)


@pytest.mark.parametrize("bad", ["../../x", "..", "a/b", "a\\\\b", ".hidden", "", "x" * 129, "a..b", "sp ace"])
def test_manifest_index_names_never_act_as_paths(tmp_path, bad):
    from blendsync.shared.store import StoreError

    fs = FeatureStore(tmp_path / "s.zarr")
    fs.init()
    with pytest.raises(StoreError, match="is not allowed"):
        fs.write_index(bad, {"entries": []})
    with pytest.raises(StoreError, match="is not allowed"):
        fs.read_index(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # nothing written outside
    fs.write_index("take-1_v2.final", {"entries": []})
    assert fs.index_names() == ["take-1_v2.final"]


def test_index_names_from_manifest_stems_are_made_safe():
    from blendsync.shared.store import check_index_name, index_name_from

    for stem in ("my data (v2)", "..weird", "ok-name", "日本"):
        assert check_index_name(index_name_from(stem))


def test_an_item_without_recorded_shapes_is_refused_with_how_to_migrate(tmp_path):
    import json

    from blendsync.shared.store import ItemError
    from tests.helpers import make_random_store

    fs, keys = make_random_store(tmp_path / "s.zarr", [20])
    meta = fs.item_path(keys[0]) / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"]["shapes"]
    meta.write_text(json.dumps(doc))
    with pytest.raises(ItemError, match="records no array shapes .*bsfeat extract MANIFEST --store .* --repair"):
        fs.read_item(keys[0])


def test_an_index_another_run_creates_at_the_same_moment_is_written_not_an_error(tmp_path, monkeypatch):
    """Two extracts writing one new manifest index at once: zarr looks, finds no group, and
    creates it, when the other run has just created it (ContainsGroupError, 1 in ~12 runs of
    tests/featurize/test_crash_safety.py's two-runs test under load)."""
    import zarr
    from zarr.errors import ContainsGroupError

    from blendsync.shared.store import FeatureStore

    fs = FeatureStore(tmp_path / "f.zarr")
    fs.init()
    real = zarr.open_group

    def raced(location, mode="a", **kw):
        if mode == "a":
            real(location, mode="a").attrs.put({"by": "the other run"})  # the other run wins the create
            raise ContainsGroupError(f"A group exists in store {location!r} at path ''.")
        return real(location, mode=mode, **kw)

    monkeypatch.setattr(zarr, "open_group", raced)
    fs.write_index("m", {"entries": [], "by": "this run"})
    monkeypatch.setattr(zarr, "open_group", real)
    assert fs.read_index("m")["by"] == "this run"
