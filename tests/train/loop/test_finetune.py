"""bstrain fit --init-from: weights carried over by channel name, onto another rig."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import REPO, mouth_from_speech, tiny, write_manifest

from blendsync.featurize.extract import extract
from blendsync.shared.audio import decode_audio
from blendsync.shared.config import FeatureConfig
from blendsync.shared.frame_grid import n_frames
from blendsync.train.cli import main as bstrain
from blendsync.train.core.build import build_model
from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.core.config import ConfigOverrides
from blendsync.train.core.model import PER_CHANNEL
from blendsync.train.loop.finetune import InitFrom, fine_tune_config, transfer_weights

RIG = ["mouthClose", "jawOpen", "lipsUp"]


def test_per_channel_lists_every_parameter_with_a_row_per_channel():
    cfg = tiny()
    a, b = build_model(cfg, FeatureConfig(), 3).state_dict(), build_model(cfg, FeatureConfig(), 5).state_dict()
    differ = {k for k in a if a[k].shape != b[k].shape}
    assert differ == set(PER_CHANNEL)
    assert all(a[k].shape[0] == 3 and b[k].shape[0] == 5 for k in differ)


def test_rows_are_matched_by_name_and_new_channels_start_at_their_mean(checkpoint):
    init = InitFrom.load(checkpoint)
    ck = init.checkpoint
    model = build_model(ck.config, ck.feature_config, len(RIG))
    model.decoder.init_bias(torch.tensor([0.1, 0.2, 0.3]))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    match = transfer_weights(model, init, RIG)
    assert match.matched == ["mouthClose", "jawOpen"] and match.new == ["lipsUp"]
    assert len(match.dropped) == 50 and "eyeBlinkLeft" in match.dropped
    got, src = model.state_dict(), ck.model_state
    for name in got:
        if name not in PER_CHANNEL:
            assert torch.equal(got[name], src[name]), name
            continue
        for row, c in enumerate(RIG[:2]):
            assert torch.equal(got[name][row], src[name][ck.channels.index(c)]), (name, c)
        assert torch.equal(got[name][2], fresh[name][2]), name  # the new channel as it started
    assert got["decoder.head_bias"][2] == pytest.approx(0.3)


@pytest.fixture
def rig_store(tmp_path):
    """The example audio with a three-channel rig's curves (two ARKit names and one other)."""
    cfg = tmp_path / "rig.yaml"
    cfg.write_text("targets:\n  channels: [mouthClose, jawOpen, lipsUp]\n")
    rows = []
    for take, split in (("ava_take1", "train"), ("bruno_take2", "train"), ("chen_take1", "val")):
        audio = REPO / "data" / "example" / (take + (".flac" if take.startswith("bruno") else ".wav"))
        dec = decode_audio(audio, 16000)
        T = n_frames(dec.duration_s, 30.0)
        jaw = mouth_from_speech(dec.samples, 16000, T, 30.0)
        np.save(tmp_path / f"{take}.npy", np.stack([0.3 * (1 - jaw), jaw, 0.5 * jaw**2], axis=1).astype(np.float32))
        rows.append(
            {"audio": audio, "targets": tmp_path / f"{take}.npy", "targets_fps": 30, "split": split, "id": take}
        )
    man = write_manifest(tmp_path / "rig.csv", rows)
    assert extract(man, tmp_path / "rig.zarr", FeatureConfig.load(cfg), executor="serial").ok
    return tmp_path / "rig.zarr"


def run(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        bstrain(args)
    return e.value.code, capsys.readouterr().err


def test_fit_init_from_onto_another_rig(rig_store, checkpoint, tmp_path, capsys):
    code, err = run(
        [
            "fit",
            "--store",
            str(rig_store),
            "--out",
            str(tmp_path / "ft"),
            "--init-from",
            str(checkpoint),
            "--max-steps",
            "3",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert "2 channels matched by name, 1 new (starting at their training means): lipsUp, 50 dropped" in err
    run_cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert run_cfg["init_from"]["channels"]["matched"] == ["mouthClose", "jawOpen"]
    assert run_cfg["init_from"]["keep_normalization"] is False
    src, ft = Checkpoint.load(checkpoint), Checkpoint.load(tmp_path / "ft" / "checkpoints" / "last.pt")
    assert ft.channels == RIG and ft.config.model == src.config.model and ft.window == src.window
    assert ft.training.step == 3  # a fresh schedule: counted from 0
    assert not np.array_equal(ft.normalizer.mel_mean, src.normalizer.mel_mean)  # this data's statistics
    code, err = run(
        [
            "fit",
            "--store",
            str(rig_store),
            "--out",
            str(tmp_path / "keep"),
            "--init-from",
            str(checkpoint),
            "--keep-normalization",
            "--max-steps",
            "2",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    kept = Checkpoint.load(tmp_path / "keep" / "checkpoints" / "last.pt").normalizer
    assert np.array_equal(kept.mel_mean, src.normalizer.mel_mean)
    assert np.array_equal(kept.emotion_std, src.normalizer.emotion_std)
    assert np.array_equal(kept.target_mean, ft.normalizer.target_mean)  # targets: always this data's


def test_init_from_refuses_other_features_and_other_models(rig_store, checkpoint, tmp_path, capsys):
    other = tmp_path / "other.zarr"
    man = write_manifest(
        tmp_path / "one.csv",
        [
            {
                "audio": REPO / "data" / "example" / "ava_take1.wav",
                "targets": REPO / "data" / "example" / "ava_take1.csv",
            }
        ],
    )
    assert extract(man, other, FeatureConfig.from_dict({"mel": {"n_mels": 40}}), executor="serial").ok
    code, err = run(
        ["fit", "--store", str(other), "--out", str(tmp_path / "a"), "--init-from", str(checkpoint), "--no-progress"],
        capsys,
    )
    assert code == 1 and "differs from the checkpoint's" in err and "featurize with the checkpoint's config" in err
    code, err = run(
        [
            "fit",
            "--store",
            str(rig_store),
            "--out",
            str(tmp_path / "b"),
            "--init-from",
            str(checkpoint),
            "--preset",
            "small",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 1 and "fine-tuning keeps that checkpoint's model" in err and "--preset" in err
    code, err = run(["fit", "--store", str(rig_store), "--out", str(tmp_path / "c"), "--keep-normalization"], capsys)
    assert code == 1 and "give --init-from" in err
    code, err = run(
        ["fit", "--store", str(rig_store), "--out", str(tmp_path / "c"), "--init-from", str(checkpoint), "--resume"],
        capsys,
    )
    assert code == 1 and "--init-from starts a new one" in err
    code, err = run(
        ["fit", "--store", str(rig_store), "--out", str(tmp_path / "d"), "--init-from", str(tmp_path / "missing.pt")],
        capsys,
    )
    assert code == 1 and "missing.pt: checkpoint not found" in err


def test_fine_tune_config_takes_the_checkpoints_model_and_keeps_the_rest(checkpoint):
    init = InitFrom.load(checkpoint)
    cfg = fine_tune_config(
        tiny(model={"d_model": 64}, optim={"lr": 3e-4}, stream={"window": 300}), init, ConfigOverrides()
    )
    own = init.checkpoint.config
    assert cfg.model == own.model and cfg.stream.window == own.stream.window
    assert cfg.stream.frames_per_window == own.stream.frames_per_window and cfg.optim.lr == 3e-4


@pytest.mark.slow
def test_onto_a_real_custom_rig_every_channel_starts_at_its_mean(shared_data, checkpoint, tmp_path, caplog):
    """The FACEGOOD rig (116 channels, none an ARKit name): all new, all 52 dropped, said as a
    warning; one step at a vanishing learning rate leaves the start as it was built."""
    import logging

    from blendsync.train.loop.trainer import fit

    rig = shared_data / "custom_rig"
    man = tmp_path / "rig.csv"
    man.write_text(
        "audio,targets,targets_fps,split,id\n"
        f"{rig / '1114_3_16.wav'},{rig / 'bs_value_1114_3_16.npy'},30,train,take16\n"
    )
    cfg = FeatureConfig.from_dict({"targets": {"channels_file": str(rig / "channel_names.txt")}})
    assert extract(man, tmp_path / "rig.zarr", cfg, executor="serial").ok
    init = InitFrom.load(checkpoint)
    with caplog.at_level(logging.WARNING):
        r = fit(
            tmp_path / "rig.zarr",
            cfg=tiny(optim={"lr": 1e-12, "warmup_steps": 0, "weight_decay": 0.0}),
            out=tmp_path / "ft",
            overrides=ConfigOverrides(values={"optim.max_steps": 1}),
            init_from=init,
        )
    assert "shares no channel with this store (52 of its channels, 116 here)" in caplog.text
    doc = json.loads((r.run_dir / "config.json").read_text())["init_from"]["channels"]
    assert doc["matched"] == [] and len(doc["new"]) == 116 and len(doc["dropped"]) == 52
    ft = Checkpoint.load(r.run_dir / "checkpoints" / "last.pt")
    bias = ft.model_state["decoder.head_bias"].numpy()
    np.testing.assert_allclose(bias, np.clip(ft.normalizer.target_mean, 0, 1), atol=1e-6)
    for name, value in init.checkpoint.model_state.items():
        if name not in PER_CHANNEL:
            torch.testing.assert_close(ft.model_state[name], value, rtol=0, atol=1e-6)
    assert len(ft.still) > 90  # most of this rig never moves in the take: trained as constant 0
