from __future__ import annotations

from collections import Counter

import pytest

from blendsync.shared.manifest import ManifestError, assign_splits, read_manifest
from tests.helpers import write_manifest


def test_paths_relative_to_manifest_and_explicit_columns(make_audio, tmp_path):
    make_audio("a.wav", 1.0)
    (tmp_path / "sub").mkdir()
    m = read_manifest(
        write_manifest(
            tmp_path / "sub" / "m.csv",
            [
                {"audio": "../a.wav", "split": "TEST", "speaker": "s1", "id": "take-a"},
            ],
        )
    )
    assert not m.problems and m.rows[0].audio.resolve() == (tmp_path / "a.wav").resolve()
    assert m.rows[0].split == "test" and m.rows[0].id == "take-a" and m.rows[0].speaker == "s1"


def test_every_problem_reported_with_its_row(make_audio, tmp_path):
    make_audio("a.wav", 1.0)
    (tmp_path / "t.npy").write_bytes(b"")
    m = read_manifest(
        write_manifest(
            tmp_path / "m.csv",
            [
                {"audio": "a.wav"},  # row 1 fine
                {"audio": "nope.wav"},  # row 2 missing audio
                {"audio": "a.wav", "split": "dev", "id": "x"},  # row 3 bad split
                {"audio": "a.wav", "targets": "t.npy", "id": "y"},  # row 4 npy without fps
                {"audio": "a.wav", "targets": "t.txt", "id": "z"},  # row 5 unknown format
                {"audio": "a.wav", "targets_fps": "-3", "id": "w"},  # row 6 bad fps
                {"audio": "", "id": "v"},  # row 7 no audio
                {"audio": "a.wav"},  # row 8 repeats row 1's id
            ],
        )
    )
    assert [r.row for r in m.rows] == [1]
    by_row: dict[int, str] = {}
    for p in m.problems:
        by_row[p.row] = by_row.get(p.row, "") + str(p) + "\n"
    assert "audio file not found" in by_row[2] and "m.csv:3: row 2 (nope.wav)" in by_row[2]
    assert "split must be one of train/val/test" in by_row[3]
    assert "targets_fps" in by_row[4]
    assert "unknown format" in by_row[5]
    assert "targets_fps: frame rate must be" in by_row[6]
    assert "audio column is empty" in by_row[7]
    assert "repeats row 1" in by_row[8]


def test_missing_audio_column_or_file_is_unusable(tmp_path):
    (tmp_path / "m.csv").write_text("path,split\nx.wav,train\n")
    with pytest.raises(ManifestError, match="no 'audio' column"):
        read_manifest(tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "none.csv")


def test_stable_split_never_leaves_validation_empty():
    for n in range(2, 30):
        groups = [f"speaker{i}" for i in range(n)]
        s = assign_splits(groups)
        assert "val" in s and "train" in s
        assert s == assign_splits(list(groups))  # stable
    assert assign_splits(["only"]) == ["train"]
    # Rows of one group share a split.
    s = assign_splits(["a", "b", "a", "c", "b"])
    assert s[0] == s[2] and s[1] == s[4]


def test_blank_split_hashes_speaker_else_id(make_audio, tmp_path):
    for i in range(6):
        make_audio(f"a{i}.wav", 0.5, seed=i)
    rows = [{"audio": f"a{i}.wav", "speaker": "s1" if i < 3 else "s2"} for i in range(6)]
    m = read_manifest(write_manifest(tmp_path / "m.csv", rows))
    splits = [r.split for r in m.rows]
    assert splits[:3] == [splits[0]] * 3 and splits[3:] == [splits[3]] * 3
    assert Counter(splits)["val"] == 3
    # One speaker only: split by id, still with a validation take.
    rows = [{"audio": f"a{i}.wav", "speaker": "solo"} for i in range(6)]
    m = read_manifest(write_manifest(tmp_path / "m2.csv", rows))
    assert "val" in {r.split for r in m.rows} and "train" in {r.split for r in m.rows}


def test_a_directory_a_fifo_or_a_symlink_loop_is_named_for_what_it_is(tmp_path):
    import os

    from blendsync.shared.manifest import read_manifest

    (tmp_path / "adir.wav").mkdir()
    os.mkfifo(tmp_path / "pipe.wav")
    os.symlink(tmp_path / "loop_b.wav", tmp_path / "loop_a.wav")
    os.symlink(tmp_path / "loop_a.wav", tmp_path / "loop_b.wav")
    (tmp_path / "t").mkdir()
    m = tmp_path / "m.csv"
    m.write_text("audio,targets\nadir.wav,\npipe.wav,\nloop_a.wav,\npipe.wav,t/x.csv\n")
    man = read_manifest(m)
    text = {p.row: [] for p in man.problems}
    for p in man.problems:
        text[p.row].append(str(p))
    joined = {k: " ".join(v) for k, v in text.items()}
    assert "is a directory, not a file" in joined[1]
    assert "is a named pipe (FIFO), not a file" in joined[2]
    assert "cannot be read" in joined[3] and "symbolic links" in joined[3].lower()
    assert "targets file not found" in joined[4]
