#!/usr/bin/env python3
"""Generate the synthetic example data that ships in data/example/ and data_manifest.csv.

Speech comes from espeak-ng (three voices); the Live Link Face CSV targets are derived from
that speech so a model can learn them:
  - jawOpen / mouthLowerDown follow the loudness envelope, mouthClose its absence;
  - mouthFunnel / mouthPucker follow rounded (low-centroid) voiced sounds;
  - mouthStretch / mouthUpperUp follow fricative (high-band) energy;
  - browInnerUp / browOuterUp follow the pitch (F0) above the voice's median;
  - mouthSmile is a per-voice level modulated by pitch; cheekSquint follows smile;
  - eyeBlinkLeft/Right are 150 ms blinks every 2-5 s (seeded; not predictable from audio).
Mouth curves lead the audio by 60 ms, as real mouths move before the sound.
Curves are written at 60 fps with wall-clock timecodes (HH:MM:SS:FF.fff) and 6 decimals.

Usage: python scripts/generate_example_data.py [--out data/example] [--manifest data_manifest.csv]
Run with the project's .venv; needs espeak-ng on PATH (apt-get install espeak-ng). Deterministic for one
espeak-ng version.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from blendsync.shared.channels import ARKIT_52, LIVELINK_ROTATIONS, pascal_case

FPS = 60.0
LEAD_S = 0.060

VOICES = {
    # speaker: (espeak voice, words per minute, pitch 0-99, smile level, split)
    "ava": ("en-us+f3", 150, 60, 0.25, "train"),
    "bruno": ("en-gb+m3", 140, 35, 0.10, "train"),
    "chen": ("en-us+m1", 160, 45, 0.18, "val"),
}

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Whose shoes are those, Sue? We wove a woollen rope.",
    "She sells sea shells by the sea shore. Open wide, and say ah. "
    "Moving mountains takes a lot of patience, doesn't it?",
    "Good morning! Would you like some hot soup, or a cool glass of water? I think the blue one looks better.",
    "Peter Piper picked a peck of pickled peppers. Oh, look at the moon tonight. "
    "How many cookies could a good cook cook?",
]

TAKES = {
    "ava": [0, 1, 2],
    "bruno": [1, 2, 3],
    "chen": [0, 3, 2],
}


def speak(text: str, voice: str, wpm: int, pitch: int, path: Path) -> None:
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(path), text],
        check=True,
    )


def envelope_features(y: np.ndarray, sr: int, times: np.ndarray) -> dict[str, np.ndarray]:
    """Per-target-frame loudness, spectral centroid, high-band ratio and F0 (0 = unvoiced)."""
    import librosa

    hop = int(sr / 100)
    S = np.abs(librosa.stft(y, n_fft=1024, hop_length=hop, win_length=int(0.03 * sr))) ** 2
    freqs = librosa.fft_frequencies(sr=sr, n_fft=1024)
    power = S.sum(axis=0) + 1e-12
    rms_db = 10 * np.log10(power)
    centroid = (freqs[:, None] * S).sum(axis=0) / power
    high = S[freqs > 3500].sum(axis=0) / power
    f0, voiced, _ = librosa.pyin(y, fmin=60, fmax=450, sr=sr, hop_length=hop, frame_length=1024)
    f0 = np.where(voiced, f0, 0.0)
    t_rows = np.arange(S.shape[1]) * hop / sr
    out = {}
    for name, v in (("db", rms_db), ("centroid", centroid), ("high", high), ("f0", np.nan_to_num(f0))):
        out[name] = np.interp(times, t_rows, v[: len(t_rows)])
    return out


def smooth(x: np.ndarray, frames: int) -> np.ndarray:
    k = np.hanning(frames * 2 + 1)
    k /= k.sum()
    return np.convolve(np.pad(x, frames, mode="edge"), k, mode="valid")


def curves_for(y: np.ndarray, sr: int, smile: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    dur = len(y) / sr
    n = int(np.floor(dur * FPS))
    t = np.arange(n) / FPS
    f = envelope_features(y, sr, t + LEAD_S)  # mouth leads the sound
    db = f["db"]
    loud = np.clip((db - (db.max() - 50)) / 50, 0, 1)
    speech = smooth((loud > 0.25).astype(float), 4)
    jaw = smooth(np.clip(loud - 0.25, 0, 1) / 0.75, 3) ** 0.8
    rounded = np.clip((1800 - f["centroid"]) / 1300, 0, 1) * (loud > 0.35)
    fric = np.clip((f["high"] - 0.15) / 0.5, 0, 1) * (loud > 0.2)
    f0 = f["f0"]
    voiced = f0 > 0
    med = np.median(f0[voiced]) if voiced.any() else 150.0
    pitch_up = np.where(voiced, np.clip((np.log2(np.maximum(f0, 1) / med)) / 0.5, 0, 1), 0.0)
    brow = smooth(pitch_up, 6)
    c = {name: np.zeros(n) for name in ARKIT_52}
    c["jawOpen"] = 0.75 * jaw
    c["mouthLowerDownLeft"] = c["mouthLowerDownRight"] = 0.4 * jaw
    c["mouthClose"] = 0.25 * (1 - speech) * (1 - jaw)
    c["mouthFunnel"] = 0.7 * smooth(rounded, 3)
    c["mouthPucker"] = 0.5 * smooth(rounded, 3)
    c["mouthStretchLeft"] = c["mouthStretchRight"] = 0.45 * smooth(fric, 2)
    c["mouthUpperUpLeft"] = c["mouthUpperUpRight"] = 0.3 * smooth(fric, 2)
    c["browInnerUp"] = 0.6 * brow
    c["browOuterUpLeft"] = c["browOuterUpRight"] = 0.35 * brow
    sm = smile * (0.8 + 0.4 * brow)
    c["mouthSmileLeft"], c["mouthSmileRight"] = sm, 0.9 * sm
    c["cheekSquintLeft"] = c["cheekSquintRight"] = 0.5 * sm
    blink = np.zeros(n)
    at = rng.uniform(0.5, 2.0)
    while at < dur:
        i = int(at * FPS)
        shape = np.concatenate([np.linspace(0, 1, 4), np.linspace(1, 0, 6)[1:]])
        blink[i : i + len(shape)] = shape[: max(0, min(len(shape), n - i))]
        at += rng.uniform(2.0, 5.0)
    c["eyeBlinkLeft"] = blink
    c["eyeBlinkRight"] = np.roll(blink, 1)
    c["eyeSquintLeft"] = c["eyeSquintRight"] = 0.3 * blink + 0.2 * sm
    values = np.clip(np.stack([c[name] for name in ARKIT_52], axis=1), 0, 1)
    return t, values


def timecode(seconds: float) -> str:
    """Wall-clock seconds -> HH:MM:SS:FF.fff with FF frames at 60 fps (the app's format)."""
    h = int(seconds // 3600)
    m = int(seconds % 3600 // 60)
    s = int(seconds % 60)
    ff = (seconds - np.floor(seconds)) * FPS
    return f"{h:02d}:{m:02d}:{s:02d}:{ff:06.3f}"


def write_livelink_csv(path: Path, start_s: float, t: np.ndarray, values: np.ndarray) -> None:
    header = ["Timecode", "BlendshapeCount", *[pascal_case(n) for n in ARKIT_52], *LIVELINK_ROTATIONS]
    zeros = ",".join(["0.000000"] * len(LIVELINK_ROTATIONS))
    lines = [",".join(header)]
    for ti, row in zip(t, values):
        vals = ",".join(f"{v:.6f}" for v in row)
        lines.append(f"{timecode(start_s + ti)},61,{vals},{zeros}")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/example"))
    ap.add_argument("--manifest", type=Path, default=Path("data_manifest.csv"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261125)
    rows = ["audio,targets,split,speaker,id"]
    clock = 10 * 3600 + 12 * 60 + 5.29  # 10:12:05 and a fraction of a frame
    for spk, (voice, wpm, pitch, smile, split) in VOICES.items():
        for n, text_i in enumerate(TAKES[spk], start=1):
            name = f"{spk}_take{n}"
            with tempfile.TemporaryDirectory() as tmp:
                wav = Path(tmp) / "speech.wav"
                speak(TEXTS[text_i], voice, wpm, pitch, wav)
                y, sr = sf.read(wav, dtype="float32")
            # Half a second of room tone on each side, as in a real take.
            pad = np.zeros(int(0.5 * sr), dtype=np.float32)
            y = np.concatenate([pad, y, pad])
            y += rng.normal(0, 3e-4, len(y)).astype(np.float32)
            # Two formats in the example: FLAC for one voice, WAV for the others.
            ext = "flac" if spk == "bruno" else "wav"
            audio_path = args.out / f"{name}.{ext}"
            sf.write(audio_path, y, sr, subtype="PCM_16")
            t, values = curves_for(y, sr, smile, rng)
            write_livelink_csv(args.out / f"{name}.csv", clock, t, values)
            clock += len(y) / sr + 37.0

            def rel(p):
                return p.relative_to(args.manifest.parent.resolve()) if p.is_absolute() else p

            rows.append(f"{rel(audio_path)},{rel(args.out / (name + '.csv'))},{split},{spk},{name}")
            print(f"{name}: {len(y) / sr:.2f} s, {voice}, {split}")
    args.manifest.write_text("\n".join(rows) + "\n")
    print(f"wrote {args.manifest} ({len(rows) - 1} takes)")


if __name__ == "__main__":
    main()
