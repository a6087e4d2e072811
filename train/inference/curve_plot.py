"""predict's preview image: the audio's waveform above one strip per preferred curve, drawn
straight into pixels with Pillow.

The layout never changes (a stack of strips sharing the time axis), so it needs none of a
plotting library's machinery: matplotlib spent 0.18 CPU-s on a five-second line (axes and
tick objects rebuilt per figure), about as much as the line's features and model together,
and its import another 0.3 s of every predict run. Here a line costs about 25 ms.

Pixels: 1000 wide, 160 per strip (the figure matplotlib drew at 10 x 1.6 in, 100 dpi). Lines
are drawn at twice the size and halved (anti-aliased); the waveform is each pixel column's
minimum..maximum sample, so no peak is lost however long the file.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np

WIDTH, STRIP = 1000, 160
# Margins in output pixels: room for the y labels and tick values, the title, the x axis.
LEFT, RIGHT, TOP, BOTTOM, GAP = 90, 20, 35, 50, 22
SCALE = 2  # drawn at twice the size, then halved
INK, GRID, WAVE, CURVE = (30, 30, 30), (225, 225, 225), (128, 128, 128), (31, 119, 180)


@dataclass(frozen=True)
class Strip:
    """One strip: y range shown, its tick values, its label."""

    label: str
    lo: float
    hi: float
    ticks: tuple[float, ...]


@functools.lru_cache(maxsize=4)
def _font(px: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=px)


def nice_step(span: float, most: int) -> float:
    """The smallest of 1, 2, 5 x 10^k that cuts span into at most `most` steps (within float
    rounding: 64.001 - 64 still takes 0.0005 for 2 steps)."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / most
    base = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * base >= raw * (1 - 1e-9):
            return m * base
    return 10.0 * base


def ticks(lo: float, hi: float, most: int) -> list[float]:
    """Tick values: multiples of nice_step within [lo, hi]."""
    step = nice_step(hi - lo, most)
    first = math.ceil(lo / step - 1e-9)
    out = []
    k = first
    while k * step <= hi + 1e-9 * step:
        out.append(round(k * step, 10) + 0.0)
        k += 1
    return out


def _label(v: float) -> str:
    return f"{v:g}"


def render(
    samples: np.ndarray, sr: int, curves: np.ndarray, fps: float, channels: list[str], names: list[str], title: str
) -> bytes:
    """PNG bytes: samples (N,) at sr above the curves (T, C) at fps of the channels `names`
    (a subset of channels, one strip each, drawn on [0, 1])."""
    from PIL import Image, ImageDraw

    s = SCALE
    rows = len(names) + 1
    H = (TOP + BOTTOM + rows * STRIP) * s
    W = WIDTH * s
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    duration = max(len(samples) / sr, curves.shape[0] / fps, 1e-3)
    x0, x1 = LEFT * s, (WIDTH - RIGHT) * s
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    peak = peak if peak > 0 else 1.0
    amp = nice_step(peak, 2) * math.ceil(peak / nice_step(peak, 2) - 1e-9)
    strips = [Strip("audio", -amp * 1.05, amp * 1.05, tuple(ticks(-amp, amp, 4)))]
    strips += [Strip(n, -0.02, 1.02, (0.0, 0.5, 1.0)) for n in names]
    xticks = ticks(0.0, duration, 10)
    font = _font(11 * s)

    def x_of(t):
        return x0 + (np.asarray(t, np.float64) / duration) * (x1 - x0)

    boxes = []
    for i, st in enumerate(strips):
        top = (TOP + i * STRIP) * s
        bottom = top + (STRIP - GAP) * s
        boxes.append((top, bottom))

        def y_of(v, st=st, top=top, bottom=bottom):
            return bottom - (np.asarray(v, np.float64) - st.lo) / (st.hi - st.lo) * (bottom - top)

        for t in xticks:
            draw.line([(float(x_of(t)), top), (float(x_of(t)), bottom)], fill=GRID, width=s)
        for v in st.ticks:
            y = float(y_of(v))
            draw.line([(x0, y), (x1, y)], fill=GRID, width=s)
            draw.line([(x0 - 4 * s, y), (x0, y)], fill=INK, width=s)
            draw.text((x0 - 6 * s, y), _label(v), fill=INK, font=font, anchor="rm")
        if i == 0:
            _waveform(img, samples, sr, duration, x0, x1, (top, bottom), y_of)
        else:
            c = curves[:, channels.index(st.label)]
            pts = np.stack([x_of(np.arange(len(c)) / fps), y_of(c)], axis=1)
            if len(pts) > 1:
                draw.line(pts.ravel().tolist(), fill=CURVE, width=int(1.5 * s))
        draw.rectangle([x0, top, x1, bottom], outline=INK, width=s)
        _ylabel(img, st.label, font, (x0 - 62 * s, (top + bottom) // 2))
    last_bottom = boxes[-1][1]
    for t in xticks:
        x = float(x_of(t))
        draw.line([(x, last_bottom), (x, last_bottom + 4 * s)], fill=INK, width=s)
        draw.text((x, last_bottom + 6 * s), _label(t), fill=INK, font=font, anchor="mt")
    draw.text(((x0 + x1) / 2, last_bottom + 24 * s), "seconds", fill=INK, font=font, anchor="mt")
    draw.text(((x0 + x1) / 2, (TOP - 8) * s), title, fill=INK, font=_font(13 * s), anchor="ms")
    out = io.BytesIO()
    # Every pixel is paper, an ink, or a blend of two of them at an anti-aliased edge: a fixed
    # palette of those holds the image, and a palette PNG encodes in a third of an RGB one's time.
    img.reduce(s).quantize(palette=_palette(), dither=Image.Dither.NONE).save(out, format="png", compress_level=1)
    return out.getvalue()


def _waveform(img, samples: np.ndarray, sr: int, duration: float, x0: int, x1: int, box: tuple[int, int], y_of) -> None:
    """Each pixel column's minimum..maximum sample, filled as one mask (box: the strip's top
    and bottom pixel rows)."""
    from PIL import Image

    n = len(samples)
    if n == 0:
        return
    cols = int(round((x1 - x0) * (n / sr) / duration))
    cols = max(1, min(cols, n))
    edges = np.linspace(0, n, cols + 1).astype(np.int64)[:-1]
    top, bottom = box
    lo = np.minimum.reduceat(samples, edges)
    hi = np.maximum.reduceat(samples, edges)
    # Each column reaches its left neighbour's range too: the trace is continuous.
    lo[1:], hi[1:] = np.minimum(lo[1:], hi[:-1]), np.maximum(hi[1:], lo[:-1])
    ylo = np.floor(y_of(lo) - top)
    yhi = np.floor(y_of(hi) - top)
    r = np.arange(bottom - top)[:, None]
    mask = ((r >= yhi[None, :]) & (r <= ylo[None, :])).astype(np.uint8) * 255
    img.paste(WAVE, (x0, top, x0 + cols, bottom), Image.fromarray(mask, "L"))


@functools.lru_cache(maxsize=1)
def _palette():
    """A "P" image whose palette is paper, the inks, and 12 steps of every blend an edge makes
    (paper to each ink, grid to the waveform and to the curve)."""
    from PIL import Image

    pairs = [((255, 255, 255), ink) for ink in (INK, GRID, WAVE, CURVE)] + [(GRID, WAVE), (GRID, CURVE)]
    colours: dict[tuple[int, ...], None] = {}
    for a, b in pairs:
        for w in np.linspace(0.0, 1.0, 12):
            colours[tuple(int(round(x * (1 - w) + y * w)) for x, y in zip(a, b))] = None
    flat = [v for c in colours for v in c]
    pal = Image.new("P", (1, 1))
    pal.putpalette(flat + flat[:3] * (256 - len(colours)))  # unused entries repeat paper
    return pal


def _ylabel(img, text: str, font, centre: tuple[int, int]) -> None:
    """text turned a quarter left, centred on centre."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(tile).text((1 - left, 1 - top), text, fill=255, font=font)
    tile = tile.transpose(Image.Transpose.ROTATE_90)
    ink = Image.new("RGB", tile.size, INK)
    img.paste(ink, (centre[0] - tile.width // 2, centre[1] - tile.height // 2), tile)
