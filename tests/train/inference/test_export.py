"""ONNX and TorchScript exports match PyTorch on real features, smoothing step included."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from blendsync.shared.store import FeatureStore
from blendsync.train.cli import main
from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.core.windows import cut, frame_mask, pad_frames
from blendsync.train.inference.export import INPUTS, exported_model


def real_windows(store, ck, n=7, K=None):
    """Raw (unstandardised) windows from a stored example take, incl. its first and last
    frames, for K frames per window (the checkpoint's when None)."""
    fs = FeatureStore(store)
    item = fs.read_item(fs.item_keys()[0])
    L, la, K = ck.window, ck.lookahead, K or ck.frames_per_window
    T = item.mel.shape[0]
    pm, pe = pad_frames(item.mel, L, la, block=K), pad_frames(item.emotion, L, la, block=K)
    pk = frame_mask(T, L, la, block=K)
    ks = [0, 1, 5, 40, 41, 100, T - 1][:n]
    mel = torch.from_numpy(np.stack([cut(pm, k, L) for k in ks]))
    emo = torch.from_numpy(np.stack([cut(pe, k, L) for k in ks]))
    mask = torch.from_numpy(np.stack([cut(pk, k, L) for k in ks]))
    prev = torch.rand(len(ks), len(ck.channels), generator=torch.Generator().manual_seed(1))
    has = torch.tensor([k > 0 for k in ks])
    return mel, emo, mask, prev, has


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_real_features(example_store, checkpoint, tmp_path, fmt):  # noqa: F811
    out = tmp_path / f"model.{fmt}"
    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out)])
    assert e.value.code == 0
    ck = Checkpoint.load(checkpoint)
    model, norm = ck.build_model(), ck.normalizer
    ref_model = exported_model(model, norm)
    args = real_windows(example_store, ck)  # batch 7: not the export's example batch of 2
    with torch.no_grad():
        ref = [t.numpy() for t in ref_model(*args)]
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        assert onnx.load(str(out)).opset_import[0].version == 18
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = sess.run(None, {k: v.numpy() for k, v in zip(INPUTS, args)})
    else:
        with torch.no_grad():
            got = [t.numpy() for t in torch.jit.load(str(out))(*args)]
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=1e-4)
    K = ck.frames_per_window
    assert got[0].shape == (7, K, 52) and got[1].shape == (7, K, 52)
    # The smoothing is really in the graph: smoothed differs from current where a previous
    # frame exists (has_prev, or inside the block), and not on a file's first frame.
    assert not np.allclose(got[1][1:], got[0][1:]) and np.allclose(got[1][0, 0], got[0][0, 0])
    if K > 1:
        assert not np.allclose(got[1][0, 1:], got[0][0, 1:])
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["frames_per_window"] == K and side["block_positions"] == [side["window"] - K - 6, side["window"] - 6]
    assert side["channels"][17] == "jawOpen" and side["fps"] == 30.0 and side["window"] == ck.window
    assert side["lookahead"] == 6 and side["feature_config_hash"] == ck.feature_config_hash
    assert side["onnx_opset"] == (18 if fmt == "onnx" else None) and len(side["normalisation"]["mel_mean"]) == 80


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", str(bad), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert e.value.code == 1


class _Payload:
    """Anything that is not a tensor, number, string or container: unpickling it would run code."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_loading_never_executes_pickled_code(tmp_path, capsys):
    from blendsync.train.core.checkpoint import FORMAT, CheckpointError, load_checkpoint

    torch.save({"format": FORMAT, "payload": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert "this must never run" not in capsys.readouterr().out


def test_export_with_fewer_frames_per_window(example_store, checkpoint, tmp_path):  # noqa: F811
    """A graph of K' < K frames per window (the last K' trained block positions): (B, K', C)
    outputs that match PyTorch at K'."""
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out), "-K", "2"])
    assert e.value.code == 0
    ck = Checkpoint.load(checkpoint)
    model, norm = ck.build_model(), ck.normalizer
    model.use_frames_per_window(2)
    args = real_windows(example_store, ck, K=2)
    with torch.no_grad():
        ref = [t.numpy() for t in exported_model(model, norm)(*args)]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {k: v.numpy() for k, v in zip(INPUTS, args)}
    )
    assert got[0].shape == (7, 2, 52)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=1e-4)
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["frames_per_window"] == 2 and side["trained_frames_per_window"] == ck.frames_per_window


def test_a_live_models_one_frame_step_graph_gives_whole_file_predicts_curves(live_checkpoint, shared_data, tmp_path):
    """onnxruntime stepping the exported one-frame graph from the zero state, frame by frame (the
    lookahead's padding frames at the end), gives the curves of whole-file predict."""
    import json

    import onnxruntime as ort

    from blendsync.shared.featurize_file import featurize_file
    from blendsync.train.inference.export import export
    from blendsync.train.inference.predict import Predictor

    side = json.loads(export(live_checkpoint, tmp_path / "step.onnx", "onnx", graph="step").read_text())
    assert side["graph"] == "step" and side["inputs"][:4] == ["mel", "emotion", "real", "has_prev"]
    pred = Predictor.load(live_checkpoint)
    audio = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    ff = featurize_file(audio, None, pred.feature_config)
    want = pred.animate(audio)["curves"]
    names = side["inputs"][4:]
    state = [np.zeros([1, *side["state"][n]["shape"]], np.bool_ if side["state"][n]["dtype"] == "bool" else np.float32)
             for n in names]  # fmt: skip
    sess = ort.InferenceSession(str(tmp_path / "step.onnx"))
    la, T = pred.lookahead, ff.mel.shape[0]
    got = []
    for t in range(T + la):
        real = t < T
        feeds = {
            "mel": ff.mel[min(t, T - 1)][None] if real else pred.norm.mel_mean[None].astype(np.float32),
            "emotion": ff.emotion[min(t, T - 1)][None] if real else pred.norm.emotion_mean[None].astype(np.float32),
            "real": np.array([real]),
            "has_prev": np.array([t > la]),
            **dict(zip(names, state)),
        }
        out = sess.run(None, feeds)
        state = out[2:]
        if t >= la:
            got.append(out[1][0])
    assert np.abs(np.array(got) - want).max() <= 1e-4


def test_the_step_graph_is_a_live_models_only(checkpoint, tmp_path):
    from blendsync.train.inference.export import export

    with pytest.raises(ValueError, match="offline model"):
        export(checkpoint, tmp_path / "s.onnx", "onnx", graph="step")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_live_models_window_graph_exports_quietly_and_matches_pytorch(live_store, live_checkpoint, tmp_path, fmt):
    """The live model's window graph, as its step graph is tested (its ONNX export once crashed
    under load); the export prints no tracer notes, and a TorchScript runtime's outputs need
    no gradient."""
    import warnings

    from blendsync.train.inference.export import export

    out = tmp_path / f"live.{fmt}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(live_checkpoint, out, fmt)
    # What a user sees (Python hides DeprecationWarnings, torch's notes on its own tracer's future).
    assert [str(w.message)[:80] for w in caught if not issubclass(w.category, DeprecationWarning)] == []
    ck = Checkpoint.load(live_checkpoint)
    args = real_windows(live_store, ck)
    with torch.no_grad():
        ref = [t.numpy() for t in exported_model(ck.build_model(), ck.normalizer)(*args)]
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = sess.run(None, {k: v.numpy() for k, v in zip(INPUTS, args)})
    else:
        outputs = torch.jit.load(str(out))(*args)  # no torch.no_grad(): as a runtime calls it
        assert not any(t.requires_grad for t in outputs)
        got = [t.detach().numpy() for t in outputs]
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=1e-4)
