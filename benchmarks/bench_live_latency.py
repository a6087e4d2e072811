#!/usr/bin/env python3
"""Latency as a user feels it: `bstrain stream --stdin-pcm` fed real speech in real time in
10 ms chunks, a loopback receiver stamping every packet.

A frame's latency is its packet's arrival less the moment the audio at its instant was fed
(the write of the 10 ms chunk that holds it). Reported per stream: p50 / p99 / max latency,
late and dropped frames as the stream counted them, CPU seconds of the stream process per
audio second, and (--minutes) the p99 of every minute, to show whether latency drifts. The
baseline in the same run is the offline model (K = 128) streamed the same way. --streams N
runs N streams at once, all pinned to core --core (the feeder and receivers on the others), to
find how many one core sustains.

Checkpoints come from a few training steps on the example data (timing does not depend on the
weights): the live preset on the live feature config, the small offline preset on the default
one.

    python benchmarks/bench_live_latency.py [--seconds 60] [--minutes M] [--streams N --core 0] [--no-offline]
        [--rate 8000 --rate 44100 ...]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPEECH = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "speech"
CHUNK_S = 0.01
RATE = 16000


def n_frames(duration_s: float, fps: float) -> int:
    from blendsync.shared.frame_grid import n_frames as grid_frames

    return grid_frames(duration_s, fps)


def checkpoints(tmp: Path) -> dict[str, Path]:
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FEATURE_PRESETS
    from blendsync.train.core.config import ConfigOverrides, TrainConfig
    from blendsync.train.loop.trainer import fit

    out = {}
    for name, feats, preset in (("live", "live", "live"), ("offline", "default", "small")):
        store = tmp / f"{feats}.zarr"
        assert extract(REPO / "data_manifest.csv", store, FEATURE_PRESETS[feats], executor="serial").ok
        fit(store, cfg=TrainConfig(), out=tmp / name, overrides=ConfigOverrides(preset=preset), stop_after_steps=3)
        out[name] = tmp / name / "checkpoints" / "last.pt"
    return out


def speech(seconds: float, rate: int = RATE) -> np.ndarray:
    """Real speech at `rate`, int16, the shared recordings end to end, repeated to length."""
    from blendsync.shared.audio import decode_audio

    parts = [decode_audio(p, rate).samples for p in sorted(SPEECH.glob("*")) if p.suffix in (".wav", ".flac")]
    y = np.concatenate(parts)
    y = np.tile(y, int(np.ceil(seconds * rate / len(y))))[: int(seconds * rate)]
    return (np.clip(y, -1, 1) * 32767).astype(np.int16)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Receiver:
    """UDP on 127.0.0.1: (frame number, arrival) of every Live Link Face packet."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[int, float]] = []
        self.fps = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                p = self.sock.recv(4096)
            except TimeoutError:
                continue
            now = time.perf_counter()
            n = struct.unpack("!i", p[41:45])[0]  # after version (4) and device id (37): name, frame, sub-frame, fps
            frame, _, self.fps = struct.unpack("!ifi", p[45 + n : 57 + n])
            self.got.append((frame, now))

    def stop(self) -> list[tuple[int, float]]:
        time.sleep(0.5)
        self.done.set()
        self.thread.join()
        self.sock.close()
        return self.got


def stream(ckpt: Path, pcm: np.ndarray, core: int | None, streams: int, rate: int = RATE) -> list[dict]:
    """Feed `streams` stream processes at once in real time; per stream its frames' latencies."""
    rx = [Receiver() for _ in range(streams)]
    pin = ["taskset", "-c", str(core)] if core is not None else []
    cmd = [sys.executable, "-m", "blendsync.train.cli", "-q", "stream", "--stdin-pcm", "--sample-rate", str(rate),
           "--checkpoint", str(ckpt)]  # fmt: skip
    procs = [subprocess.Popen([*pin, *cmd, "--to", f"127.0.0.1:{r.port}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in rx]  # fmt: skip
    if core is not None:  # the feeder and the receivers on the other cores
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {core} or {core})
    # The streams start (imports, model, openSMILE) before the audio does: wait until they all
    # sit idle on their stdin.
    cpu0 = [proc_cpu_s(p.pid) for p in procs]
    while True:
        time.sleep(1.0)
        now = [proc_cpu_s(p.pid) for p in procs]
        if all(b - a < 0.02 for a, b in zip(cpu0, now)):
            break
        cpu0 = now
    step = int(round(CHUNK_S * rate))
    n = len(pcm) // step
    fed = np.zeros(n)
    start = time.perf_counter()
    chunk_s = step / rate  # at 22.05 kHz 220 samples are 9.98 ms: fed at the audio's own pace
    for i in range(n):
        due = start + (i + 1) * chunk_s  # the chunk's audio has been spoken by its end
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        data = pcm[i * step : (i + 1) * step].tobytes()
        for p in procs:
            p.stdin.write(data)
            p.stdin.flush()
        fed[i] = time.perf_counter()
    cpu = sum(proc_cpu_s(p.pid) - c for p, c in zip(procs, cpu0)) / streams
    outs = []
    for p in procs:  # the end of the audio: the last lookahead frames leave once it is signalled
        p.stdin.close()
    for p in procs:
        out, err = p.stdout.read(), p.stderr.read()
        p.wait(timeout=120)
        outs.append((p.returncode, out.decode(), err.decode()))
    audio_s = n * chunk_s
    results = []
    for r, (code, out, err) in zip(rx, outs):
        got = r.stop()
        if code != 0:
            raise SystemExit(f"stream failed ({code}): {err[-2000:]}")
        frames = np.array([j for j, _ in got])
        arrival = np.array([t for _, t in got])
        fps = float(r.fps)
        chunk = np.minimum((frames / fps / chunk_s).astype(int), n - 1)
        lat = arrival - fed[chunk]
        summary = out.strip().splitlines()[-1]
        late, dropped = (int(re.search(rf"(\d+) {w}", summary).group(1)) for w in ("late", "dropped"))
        results.append({"frames": len(frames), "expected": n_frames(n * step / rate, fps), "latency": lat,
                        "times": frames / fps, "summary": summary, "cpu_per_audio_s": cpu / audio_s, "late": late,
                        "dropped": dropped})  # fmt: skip
    return results


def describe(name: str, r: dict, minutes: bool) -> None:
    lat = r["latency"] * 1000
    print(f"  {name}: {r['frames']}/{r['expected']} frames; latency p50 {np.median(lat):.0f} ms, p99 "
          f"{np.percentile(lat, 99):.0f} ms, max {lat.max():.0f} ms; CPU {1000 * r['cpu_per_audio_s']:.0f} ms per "
          f"audio second ({1 / max(r['cpu_per_audio_s'], 1e-9):.1f} streams per core by CPU)")  # fmt: skip
    print(f"    stream's own report: {r['summary']}")
    if minutes:
        per = [
            f"{int(m)}: {np.percentile(lat[(r['times'] >= 60 * m) & (r['times'] < 60 * (m + 1))], 99):.0f}"
            for m in np.unique(r["times"] // 60)
        ]
        print("    p99 per minute (ms): " + ", ".join(per))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--minutes", type=float, default=None, help="one long stream of this many minutes (drift)")
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("--no-offline", action="store_true")
    ap.add_argument("--rate", type=int, action="append", help="input sample rate(s) [default: 16000]; repeatable")
    args = ap.parse_args()
    seconds = 60 * args.minutes if args.minutes else args.seconds
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        ck = checkpoints(Path(tmp))
        for rate in args.rate or [RATE]:
            pcm = speech(seconds, rate)
            pinned = f" pinned to core {args.core}" if args.core is not None else ""
            print(f"{seconds:.0f} s of real speech at {rate} Hz in {1000 * CHUNK_S:.0f} ms chunks; "
                  f"{args.streams} stream(s){pinned}")  # fmt: skip
            for name in ("live",) + (() if args.no_offline or args.minutes else ("offline",)):
                for i, r in enumerate(stream(ck[name], pcm, args.core, args.streams, rate)):
                    describe(f"{name} stream {i}", r, bool(args.minutes))
                    table.append((name, rate, r))
    print("\n| model | input rate | frames | p50 (ms) | p99 (ms) | max (ms) | late | dropped | CPU (ms per audio s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rate, r in table:
        lat = r["latency"] * 1000
        print(f"| {name} | {rate} | {r['frames']}/{r['expected']} | {np.median(lat):.0f} "
              f"| {np.percentile(lat, 99):.0f} | {lat.max():.0f} | {r['late']} | {r['dropped']} "
              f"| {1000 * r['cpu_per_audio_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
