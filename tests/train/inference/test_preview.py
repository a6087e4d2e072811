"""bstrain preview writes an MP4 a standard player plays: decoded here, its duration is the
audio's within one frame, it has an audio stream, and the drawn mouth follows jawOpen."""

from __future__ import annotations

import numpy as np
import pytest

from blendsync.shared.channels import ARKIT_52
from blendsync.shared.config import FeatureConfig
from blendsync.shared.frame_grid import n_frames
from blendsync.shared.targets import TargetSpec, read_targets, targets_on_grid
from blendsync.train.cli import main
from blendsync.train.inference.preview import PANEL, draw_face, mouth_opening
from tests.helpers import REPO

av = pytest.importorskip("av")


def test_the_drawn_mouth_opens_with_jaw_open():
    js = np.linspace(0, 1, 21)
    opening = [mouth_opening(draw_face({"jawOpen": j})) for j in js]
    assert np.corrcoef(js, opening)[0, 1] > 0.99 and opening[-1] > 10 * max(opening[0], 1)


@pytest.mark.slow
def test_preview_mp4_has_sound_the_audios_length_and_a_mouth_that_follows_the_target(checkpoint, tmp_path, capsys):
    audio = REPO / "data" / "example" / "ava_take1.wav"
    targets = REPO / "data" / "example" / "ava_take1.csv"
    out = tmp_path / "take.mp4"
    with pytest.raises(SystemExit) as e:
        main(
            ["-q", "preview", str(audio), "--checkpoint", str(checkpoint), "--targets", str(targets), "--out", str(out)]
        )
    assert e.value.code == 0
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 1
        v = c.streams.video[0]
        assert (v.width, v.height) == (2 * PANEL, PANEL)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    import soundfile as sf

    duration = sf.info(str(audio)).duration
    assert abs(len(frames) / 30 - duration) <= 1 / 30
    # The right panel draws the take's own curves: its mouth opening follows their jawOpen.
    tc = read_targets(TargetSpec(targets), FeatureConfig().channels)
    jaw = targets_on_grid(tc, 30.0, n_frames(duration, 30.0)).values[:, ARKIT_52.index("jawOpen")]
    opening = [mouth_opening(f[:, PANEL:]) for f in frames]
    n = min(len(opening), len(jaw))
    assert np.corrcoef(jaw[:n], opening[:n])[0, 1] >= 0.9


def _preview(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(["-q", "preview", *args, "--no-progress"])
    return e.value.code, capsys.readouterr().err


def test_targets_of_another_length_are_refused(checkpoint, tmp_path, capsys):
    """Curves 0.5 s long beside 3 s of audio were drawn without a word."""
    audio = REPO / "data" / "example" / "ava_take1.wav"
    lines = (REPO / "data" / "example" / "ava_take1.csv").read_text().splitlines()
    short = tmp_path / "short.csv"
    short.write_text("\n".join(lines[:31]) + "\n")
    out = tmp_path / "take.mp4"
    code, err = _preview([str(audio), "--checkpoint", str(checkpoint), "--targets", str(short), "--out", str(out)],
                         capsys)  # fmt: skip
    assert code == 1 and "short.csv: the curves last 0.50 s" in err and "not this audio's take?" in err, err
    assert not out.exists()


def test_a_model_of_another_rig_is_refused_rather_than_a_frozen_face(tmp_path, capsys):
    from blendsync.train.loop.trainer import fit
    from tests.helpers import make_random_store, speechlike, tiny

    fs, _ = make_random_store(tmp_path / "s.zarr", [300, 280])  # channels c0..c4
    fit(fs.root, cfg=tiny(optim={"epochs": 1}), out=tmp_path / "run", stop_after_steps=1)
    import soundfile as sf

    audio = tmp_path / "a.wav"
    sf.write(audio, speechlike(1.0, 16000), 16000)
    ck = tmp_path / "run" / "checkpoints" / "last.pt"
    code, err = _preview([str(audio), "--checkpoint", str(ck), "--out", str(tmp_path / "v.mp4")], capsys)
    assert code == 1 and "predicts none of the 52 ARKit channels" in err and "use predict" in err


def test_any_out_name_is_an_mp4_and_an_interrupted_preview_leaves_no_file(checkpoint, tmp_path, capsys):
    from blendsync.train.inference.preview import preview

    audio = REPO / "data" / "example" / "ava_take1.wav"
    out = tmp_path / "take.video"  # said "Could not determine output format"
    code, _ = _preview([str(audio), "--checkpoint", str(checkpoint), "--out", str(out)], capsys)
    assert code == 0
    with av.open(str(out)) as c:
        assert c.format.name.startswith("mov,mp4") and len(c.streams.video) == 1
    seen = []

    def stop_after_a_second(frames):
        seen.append(frames)
        if sum(seen) >= 30:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preview(audio, checkpoint, tmp_path / "stopped.mp4", progress=stop_after_a_second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.video"]
