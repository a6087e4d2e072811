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
