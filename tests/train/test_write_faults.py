"""Outputs on a full disk or in a read-only folder: one line naming the path (exit 1), no
traceback or abort, and nothing half-written left behind (shared.files)."""

from __future__ import annotations

import pytest

from blendsync.train.cli import main
from tests.helpers import make_random_store, tiny


def _exit(args) -> int:
    with pytest.raises(SystemExit) as e:
        main(["-q", *args])
    return e.value.code


def _leftovers(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


def test_a_full_disk_while_fit_saves_a_checkpoint_is_one_line_and_leaves_no_temporary_file(
    small_disk, tmp_path, capsys
):
    fs, _ = make_random_store(tmp_path / "s.zarr", [300, 280])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny(optim={"epochs": 1}).to_yaml())
    disk = small_disk("192k")  # the run's small files fit; its checkpoint (about 270 kB) does not
    run = disk.path / "run"
    assert _exit(["fit", "--store", str(fs.root), "--config", str(cfg), "--out", str(run), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "cannot write" in err and "checkpoints" in err, err
    assert "Traceback" not in err and "RuntimeError" not in err
    assert _leftovers(disk.path) == []


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_on_a_full_disk_is_one_line_naming_the_file(checkpoint, small_disk, capsys, fmt):
    """torchscript aborted the process (exit 134, a C++ stack trace, a 0-byte file)."""
    disk = small_disk("64k")
    out = disk.path / "model.bin"
    assert _exit(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}: No space left on device" in err and "Traceback" not in err
    assert list(disk.path.iterdir()) == []


def test_export_to_a_read_only_folder_is_one_line(checkpoint, tmp_path, read_only, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(folder)
    out = folder / "model.pt"
    assert _exit(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}" in err and "Traceback" not in err


def test_predict_on_a_full_disk_leaves_no_empty_csv(checkpoint, small_disk, shared_data, capsys):
    disk = small_disk("16k")  # a 3 s take's CSV is about 50 kB
    audio = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    code = _exit(["predict", str(audio), "--checkpoint", str(checkpoint), "--out", str(disk.path), "--no-plot"])
    err = capsys.readouterr().err
    assert code != 0 and "No space left on device" in err and str(disk.path) in err, err
    assert "Traceback" not in err
    assert [p for p in disk.path.rglob("*") if p.is_file()] == []


def test_preview_on_a_full_disk_leaves_no_truncated_video(checkpoint, small_disk, shared_data, capsys):
    disk = small_disk("16k")
    audio = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    out = disk.path / "take.mp4"
    assert _exit(["preview", str(audio), "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}" in err and "Traceback" not in err, err
    assert list(disk.path.iterdir()) == []
