"""bstrain preview: an MP4 a person can watch: the take's audio with a 2D face drawn from the
curves (jaw and lips, eyes and lids, brows, cheeks), the prediction on the left and, when the
take has targets, the target on the right. Encoded with PyAV (FFmpeg in its wheel): H.264
video at the output fps, AAC audio.

Frame shapes: one panel is (PANEL, PANEL, 3) uint8 RGB; a video frame (PANEL, PANEL * n, 3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from blendsync.shared.audio import decode_audio
from blendsync.shared.channels import ARKIT_52
from blendsync.shared.files import written_atomically

log = logging.getLogger(__name__)

PANEL = 256
PROGRESS_EVERY = 30  # frames between progress calls
SKIN, BACKGROUND = (236, 200, 170), (225, 225, 230)
LIPS, MOUTH, EYE_WHITE, PUPIL, BROW, CHEEK = (
    (185, 70, 80),
    (70, 15, 25),
    (250, 250, 250),
    (35, 35, 45),
    (90, 60, 40),
    (230, 150, 150),
)
# The mouth's centre and its opening at jawOpen = 1, in panel units (-1 … 1).
MOUTH_Y, MOUTH_OPEN = 0.45, 0.28

_Y, _X = np.mgrid[-1 : 1 : PANEL * 1j, -1 : 1 : PANEL * 1j]


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((_X - cx) / max(rx, 1e-3)) ** 2 + ((_Y - cy) / max(ry, 1e-3)) ** 2 <= 1.0


def draw_face(v: dict[str, float]) -> np.ndarray:
    """One panel for curve values v (ARKit names -> [0, 1]; missing names are 0)."""
    g = lambda name: float(np.clip(v.get(name, 0.0), 0.0, 1.0))  # noqa: E731
    img = np.empty((PANEL, PANEL, 3), np.uint8)
    img[:] = BACKGROUND
    img[_ellipse(0.0, 0.05, 0.72, 0.9)] = SKIN
    for side, sx in (("Left", 1), ("Right", -1)):  # the subject's left is on the viewer's right
        puff = g("cheekPuff") + 0.5 * g(f"cheekSquint{side}")
        img[_ellipse(0.45 * sx, 0.2, 0.08 + 0.07 * puff, 0.06 + 0.05 * puff)] = CHEEK
        ex, ey = 0.3 * sx, -0.18
        open_ = (1.0 - g(f"eyeBlink{side}")) * (1.0 - 0.5 * g(f"eyeSquint{side}")) * (1.0 + 0.5 * g(f"eyeWide{side}"))
        white = _ellipse(ex, ey, 0.14, 0.09 * open_)
        img[white] = EYE_WHITE
        look_x = 0.05 * (g(f"eyeLookOut{side}") - g(f"eyeLookIn{side}")) * sx
        look_y = 0.04 * (g(f"eyeLookDown{side}") - g(f"eyeLookUp{side}"))
        img[white & _ellipse(ex + look_x, ey + look_y, 0.05, 0.05)] = PUPIL
        raise_ = 0.5 * g("browInnerUp") + 0.5 * g(f"browOuterUp{side}") - 0.6 * g(f"browDown{side}")
        by = -0.38 - 0.12 * raise_
        img[(np.abs(_X - 0.3 * sx) < 0.13) & (np.abs(_Y - by) < 0.025)] = BROW
    jaw = g("jawOpen") * (1.0 - 0.7 * g("mouthClose"))
    smile = 0.5 * (g("mouthSmileLeft") + g("mouthSmileRight"))
    width = 0.22 * (
        1.0
        + 0.5 * smile
        + 0.3 * 0.5 * (g("mouthStretchLeft") + g("mouthStretchRight"))
        - 0.4 * g("mouthPucker")
        - 0.3 * g("mouthFunnel")
    )
    shift = 0.08 * (g("mouthRight") - g("mouthLeft"))
    cy = MOUTH_Y + 0.5 * MOUTH_OPEN * jaw - 0.03 * smile
    img[_ellipse(shift, cy, width + 0.03, 0.5 * MOUTH_OPEN * jaw + 0.04)] = LIPS
    img[_ellipse(shift, cy, width, 0.5 * MOUTH_OPEN * jaw + 0.004)] = MOUTH
    return img


def mouth_opening(panel: np.ndarray) -> float:
    """The drawn mouth's height in pixels: how far the face opens its mouth in a picture
    (for tests and a quick check of a video)."""
    col = panel[:, PANEL // 2 - 8 : PANEL // 2 + 8].astype(int)
    dark = np.abs(col - np.array(MOUTH)).sum(axis=2) < 60
    return float(dark.sum(axis=0).max())


def frames_of(curves: np.ndarray, channels: list[str]) -> list[dict[str, float]]:
    idx = {c: i for i, c in enumerate(channels)}
    return [{c: float(row[i]) for c, i in idx.items()} for row in curves]


def write_preview(
    path: Path, audio: str | Path, panels: list[np.ndarray], fps: int, progress: Callable[[int], None] | None = None
) -> Path:
    """panels: one (T, C) curve array per panel with its channel names, as [(curves, channels)].
    Writes H.264 + AAC in an MP4 container (whatever path's suffix) to a temporary name renamed
    to path at the end (shared.files): an interrupted or failed preview leaves no truncated
    file. The video lasts T / fps (the audio's duration within one frame); progress(frames)
    is called as frames are encoded."""
    import av

    dec = decode_audio(audio, 16000)
    T = min(len(c) for c, _ in panels)
    with written_atomically(path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = PANEL * len(panels), PANEL, "yuv420p"
        video.options = {"crf": "23", "preset": "veryfast"}
        sound = out.add_stream("aac", rate=dec.sample_rate)
        sound.layout = "mono"
        rows = [frames_of(c, ch) for c, ch in panels]
        for t in range(T):
            image = np.concatenate([draw_face(r[t]) for r in rows], axis=1)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
            if progress is not None and (t + 1) % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
        for packet in video.encode():
            out.mux(packet)
        if progress is not None:
            progress(T % PROGRESS_EVERY)
        step = 1024
        for a in range(0, len(dec.samples), step):
            frame = av.AudioFrame.from_ndarray(
                dec.samples[None, a : a + step].astype(np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = dec.sample_rate
            frame.pts = a
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    return path


def drawable_channels(channels: list[str]) -> list[str]:
    """The channels of a model the face can draw (ARKit names); an error for a model with none."""
    known = [c for c in channels if c in set(ARKIT_52)]
    if not known:
        raise ValueError(
            f"preview draws the ARKit face (jawOpen, eyeBlinkLeft, ...); this model predicts none of the 52 "
            f"ARKit channels ({len(channels)} others, e.g. {', '.join(channels[:3])}): use predict instead"
        )
    if len(known) < len(ARKIT_52):
        log.warning(
            "preview draws the %d of this model's %d channels named like ARKit's; the face's other parts stay at rest",
            len(known),
            len(channels),
        )
    return known


def preview(
    audio: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    *,
    targets: str | None = None,
    fps: int = 30,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> Path:
    """The prediction for audio (and the targets beside it when given) as an MP4 at fps.
    Targets must last as long as the audio within the feature config's max_mismatch_s (as
    extract accepts a take)."""
    from blendsync.shared.frame_grid import n_frames
    from blendsync.shared.targets import TargetSpec, read_targets, targets_on_grid
    from blendsync.train.inference.outputs import resample_curves
    from blendsync.train.inference.predict import Predictor

    pred = Predictor.load(checkpoint, device)
    drawable_channels(list(pred.channels))
    tc = None
    if targets:
        spec = TargetSpec.parse(targets, Path.cwd())
        tc = read_targets(spec, pred.feature_config.channels)
    res = pred.animate(audio)
    if tc is not None:
        limit = pred.feature_config.targets.max_mismatch_s
        gap = tc.duration_s - res["duration_s"]
        if abs(gap) > limit:
            raise ValueError(
                f"{targets}: the curves last {tc.duration_s:.2f} s, the audio {audio} {res['duration_s']:.2f} s "
                f"({abs(gap):.2f} s {'longer' if gap > 0 else 'shorter'}; at most {limit} s is trimmed): "
                "not this audio's take?"
            )
    curves = resample_curves(res["curves"], pred.fps, float(fps), res["duration_s"])
    panels = [(curves, list(pred.channels))]
    if tc is not None:
        grid = targets_on_grid(tc, float(fps), n_frames(res["duration_s"], fps)).values
        panels.append((grid, list(pred.feature_config.channels.channels)))
    return write_preview(Path(out), audio, panels, fps, progress)


__all__ = ["draw_face", "mouth_opening", "preview", "write_preview", "ARKIT_52"]
