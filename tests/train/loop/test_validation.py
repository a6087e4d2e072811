"""Validation inside fit: a held-out tail when the manifest has no validation split,
validation every N steps, best.pt by the chosen metric, and patience."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.train.core.checkpoint import load_checkpoint
from blendsync.train.core.data import FileRef, hold_out_tails
from blendsync.train.core.normalization import compute_normalizer
from blendsync.train.loop.streaming import WindowStream
from blendsync.train.loop.trainer import fit
from tests.helpers import make_random_store, tiny


def _train_only_store(tmp_path, lengths, seed=0):
    fs, keys = make_random_store(tmp_path / "s.zarr", lengths, channels=5, seed=seed, learnable=True)
    fs.write_index("takes", {"entries": [{"key": k, "split": "train", "id": f"take{i}"} for i, k in enumerate(keys)]})
    return fs, keys


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 400), min_size=1, max_size=6), frac=st.floats(0.0, 0.5), starts=st.integers(0, 50)
)
def test_tails_and_training_ranges_cover_every_frame_once(lengths, frac, starts):
    files = [FileRef(f"k{i}", T, f"t{i}", starts) for i, T in enumerate(lengths)]
    train, val = hold_out_tails(files, frac)
    for f, tr in zip(files, train):
        tails = [v for v in val if v.key == f.key]
        got = list(range(tr.start, tr.start + tr.frames)) + [
            x for v in tails for x in range(v.start, v.start + v.frames)
        ]
        assert got == list(range(f.start, f.start + f.frames))  # in order, no gap, no overlap
        n_tail = sum(v.frames for v in tails)
        if frac > 0 and f.frames >= 2:
            assert n_tail == min(f.frames - 1, max(1, round(frac * f.frames))) and tr.frames >= 1
        else:
            assert n_tail == 0


def test_a_range_streams_the_same_windows_as_the_whole_file_and_masks_past_its_end(tmp_path):
    fs, keys = make_random_store(tmp_path / "s.zarr", [300], channels=5, seed=1)
    whole = FileRef(keys[0], 300, "w")
    part = FileRef(keys[0], 100, "p", start=160)  # a block boundary of the whole file
    norm = compute_normalizer(fs, [whole])
    kw = dict(window=64, lookahead=4, stride=1, streams=1, block=16, shuffle=False, split=False)
    a = {int(b["frame"][0]): b for b in WindowStream(fs, [whole], norm, **kw).epoch(0)}
    got = list(WindowStream(fs, [part], norm, **kw).epoch(0))
    assert [int(b["frame"][0]) for b in got] == list(range(0, 100, 16))  # counted from the range's start
    for b in got:
        k = int(b["frame"][0])
        ref = a[160 + k]
        for name in ("mel", "emotion", "frame_mask", "target"):
            assert np.array_equal(b[name], ref[name]), name
        assert b["valid"][0].tolist() == [160 + k + j < 260 for j in range(16)]
        assert b["has_prev"][0] == (k > 0)
    # Statistics of a range use its frames only.
    item = fs.read_item(keys[0])
    n = compute_normalizer(fs, [part])
    assert np.allclose(n.target_mean, item.targets[160:260].mean(0), atol=1e-6)
    assert np.allclose(n.target_std, item.targets[160:260].std(0), atol=1e-5)


def test_without_a_validation_split_the_tail_of_every_take_validates_and_is_never_trained_on(tmp_path):
    fs, keys = _train_only_store(tmp_path, [200, 260, 180])
    cfg = tiny(optim={"epochs": 2}, validation={"holdout_tail": 0.2})
    r = fit(fs.root, cfg=cfg, out=tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    tails = doc["validation"]["files"]
    assert doc["validation"]["held_out_tail"] and [t["start"] for t in tails] == [160, 208, 144]
    assert [t["frames"] for t in tails] == [40, 52, 36]
    vals = [h for h in r.history if h["kind"] == "val"]
    assert len(vals) == 2 and vals[-1]["metrics"]["frames"] == 128
    assert r.best is not None and r.best["metric"] == "skill"
    # The gain fitted on the tail travels with best.pt: evaluate/predict --gain calibrated use it.
    from blendsync.train.loop.evaluation import evaluate_checkpoint

    ev = evaluate_checkpoint(
        tmp_path / "run" / "checkpoints" / "best.pt", fs.root, manifest="takes", split="train", gain="calibrated"
    )
    assert ev["gain"] == r.best["calibrated_gain"] > 0
    # The training stream's real target frames stop where each tail starts.
    train, _ = hold_out_tails([FileRef(k, T, str(i)) for i, (k, T) in enumerate(zip(keys, [200, 260, 180]))], 0.2)
    norm = compute_normalizer(fs, train)
    s = cfg.stream
    stream = WindowStream(
        fs,
        train,
        norm,
        window=s.window,
        lookahead=s.lookahead,
        stride=1,
        streams=4,
        block=s.frames_per_window,
        shuffle=True,
        split=True,
    )
    last = {}
    for b in stream.epoch(0):
        for i in np.flatnonzero(b["active"]):
            f = int(b["file"][i])
            last[f] = max(last.get(f, -1), int(b["frame"][i]) + int(b["valid"][i].sum()) - 1)
    assert last == {0: 159, 1: 207, 2: 143}
    # No tail and no validation split: no validation, best = last, said in the log.
    r0 = fit(fs.root, cfg=tiny(optim={"epochs": 1}, validation={"holdout_tail": 0.0}), out=tmp_path / "run0")
    assert r0.best is None and not [h for h in r0.history if h["kind"] == "val"]
    assert (tmp_path / "run0" / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
def test_every_n_steps_best_by_metric_and_patience(tmp_path):
    fs, _ = _train_only_store(tmp_path, [400, 380, 420, 390])
    # 4 files of about 3 blocks (4 with a head block) on 4 streams: 3-4 steps an epoch.
    cfg = tiny(optim={"epochs": 6, "lr": 3e-3}, validation={"every_steps": 4, "metric": "mean_r"})
    r = fit(fs.root, cfg=cfg, out=tmp_path / "run")
    vals = [h for h in r.history if h["kind"] == "val"]
    want = list(range(4, r.step + 1, 4)) + ([r.step] if r.step % 4 else [])
    assert r.step >= 12 and [v["step"] for v in vals] == want  # every 4 steps, and the run's end
    best = max(vals, key=lambda v: v["metrics"]["mean_r"])
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert ck["best_val"] == {
        "metric": "mean_r",
        "value": best["metrics"]["mean_r"],
        "step": best["step"],
        "calibrated_gain": best["calibrated_gain"],
    }
    assert best["calibrated_gain"] > 0
    assert ck["step"] == best["step"] and r.best == ck["best_val"]
    # The loss as the metric: lowest wins.
    r2 = fit(
        fs.root,
        cfg=tiny(optim={"epochs": 3, "lr": 3e-3}, validation={"every_steps": 3, "metric": "loss"}),
        out=tmp_path / "run2",
    )
    v2 = [h for h in r2.history if h["kind"] == "val"]
    assert r2.best["value"] == min(v["loss"] for v in v2)
    # Patience: a learning rate that cannot improve anything after the first validation.
    r3 = fit(
        fs.root,
        cfg=tiny(
            optim={"epochs": 50, "lr": 1e-9, "warmup_steps": 0},
            validation={"every_steps": 2, "patience": 2, "metric": "loss"},
        ),
        out=tmp_path / "run3",
    )
    v3 = [h for h in r3.history if h["kind"] == "val"]
    assert r3.stopped_early and r3.step < 150
    first_best = r3.best["step"]
    assert [v["step"] for v in v3][-1] == r3.step and r3.step - first_best == 2 * 2
    assert torch.load(tmp_path / "run3" / "checkpoints" / "last.pt", weights_only=False)["validations_since_best"] == 2


def test_cli_loss_preset_validation_options_and_summary(tmp_path, capsys):
    from blendsync.train.cli import main

    fs, _ = _train_only_store(tmp_path, [300, 280])
    cfgp = tmp_path / "c.yaml"
    d = tiny().to_dict()
    d["loss"] = {"temporal": 0.3}  # written beside the preset the CLI picks: kept
    import yaml

    cfgp.write_text(yaml.safe_dump(d))
    with pytest.raises(SystemExit) as e:
        main(
            [
                "-q",
                "fit",
                "--store",
                str(fs.root),
                "--config",
                str(cfgp),
                "--out",
                str(tmp_path / "run"),
                "--loss",
                "notes",
                "--validate-every",
                "2",
                "--patience",
                "3",
                "--max-steps",
                "4",
                "--no-progress",
            ]
        )
    assert e.value.code == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]
    assert cfg["loss"]["preset"] == "notes" and cfg["loss"]["l1"] == 0.1 and cfg["loss"]["temporal"] == 0.3
    assert cfg["validation"]["every_steps"] == 2 and cfg["validation"]["patience"] == 3
    assert "best validation skill" in capsys.readouterr().out
    # A full dump of the default config overrides nothing: --loss gives the preset's weights.
    cfgp.write_text(yaml.safe_dump(tiny().to_dict()))
    with pytest.raises(SystemExit) as e:
        main(
            [
                "-q",
                "fit",
                "--store",
                str(fs.root),
                "--config",
                str(cfgp),
                "--out",
                str(tmp_path / "run2"),
                "--loss",
                "notes",
                "--max-steps",
                "1",
                "--no-progress",
            ]
        )
    assert e.value.code == 0
    cfg2 = json.loads((tmp_path / "run2" / "config.json").read_text())["train_config"]
    assert cfg2["loss"]["temporal"] == 0.1 and cfg2["loss"]["l1"] == 0.1
    with pytest.raises(SystemExit) as e:
        main(["-q", "fit", "--store", str(fs.root), "--out", str(tmp_path / "bad"), "--loss", "fancy"])
    assert e.value.code == 1  # a usage error


@pytest.mark.slow
def test_ctrl_c_saves_last_pt_and_resume_finishes_and_a_fresh_run_starts_a_fresh_history(tmp_path):
    fs, _ = _train_only_store(tmp_path, [300, 280])
    cfg = tiny(optim={"epochs": 3})

    def interrupt(rec):
        if rec["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(fs.root, cfg=cfg, out=tmp_path / "run", on_step=interrupt)
    ck = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck["step"] == 3
    r = fit(fs.root, cfg=cfg, out=tmp_path / "run", resume=True)
    assert r.step > 3 and r.epoch == 3
    steps = [h["step"] for h in r.history if h["kind"] == "train"]
    assert steps == sorted(set(steps))  # one history, no step twice
    # A folder with records but no checkpoint: the new run does not append to them.
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "metrics.jsonl").write_text('{"kind": "train", "step": 99, "loss": 1.0}\n')
    r2 = fit(fs.root, cfg=cfg, out=tmp_path / "fresh", stop_after_steps=2)
    recs = [json.loads(x) for x in (tmp_path / "fresh" / "metrics.jsonl").read_text().splitlines()]
    assert all(x["step"] <= 2 for x in recs) and r2.step == 2
    assert list((tmp_path / "fresh").glob("metrics.before-*.jsonl"))


def test_resume_refuses_options_it_would_ignore_and_names_a_different_store(tmp_path, capsys):
    from blendsync.train.cli import main

    fs, _ = _train_only_store(tmp_path, [300, 280])
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(tiny(optim={"epochs": 2}).to_yaml())
    with pytest.raises(SystemExit):
        main(
            [
                "-q",
                "fit",
                "--store",
                str(fs.root),
                "--config",
                str(cfgp),
                "--out",
                str(tmp_path / "run"),
                "--stop-after-steps",
                "1",
                "--no-progress",
            ]
        )
    with pytest.raises(SystemExit) as e:
        main(["-q", "fit", "--store", str(fs.root), "--out", str(tmp_path / "run"), "--resume", "--max-steps", "50"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "--max-steps would be ignored" in err and "config.json" in err and "Traceback" not in err
    # The same items under another path: resumed, and the log says which store it now reads.
    import shutil

    shutil.copytree(fs.root, tmp_path / "copy.zarr")
    with pytest.raises(SystemExit) as e:
        main(
            ["fit", "--store", str(tmp_path / "copy.zarr"), "--out", str(tmp_path / "run"), "--resume", "--no-progress"]
        )
    assert e.value.code == 0
    err = capsys.readouterr().err
    assert "resuming on store" in err and "copy.zarr" in err


def test_audio_only_rows_are_skipped_with_a_count_and_the_rest_trains(tmp_path, make_audio, caplog):
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FeatureConfig
    from blendsync.shared.store import FeatureStore
    from blendsync.train.core.data import load_training_data
    from tests.helpers import write_livelink, write_manifest

    make_audio("a.wav", 3.0)
    make_audio("b.wav", 3.0)
    write_livelink(tmp_path / "a.csv", 3.0)
    man = write_manifest(
        tmp_path / "m.csv",
        [{"audio": "a.wav", "targets": "a.csv", "split": "train"}, {"audio": "b.wav", "split": "train"}],
    )
    store = tmp_path / "f.zarr"
    assert extract(man, store, FeatureConfig(), executor="serial").ok
    with caplog.at_level("INFO"):
        ds = load_training_data(FeatureStore(store), None)
    assert len(ds.files("train")) == 1 and "1 item(s) without targets" in caplog.text
    assert "trained on only with a teacher" in caplog.text
    (audio_only,) = ds.unlabelled["train"]  # kept aside for a teacher, never in a split's files
    assert audio_only.key not in {f.key for f in ds.files("train")}
