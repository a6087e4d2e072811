#!/usr/bin/env python3
"""bstrain serve under load: N WebSocket clients streaming real speech in real time into one
server, and HTTP batch throughput against the CLI.

Live sessions: one `bstrain serve` process of a live model (the live preset, on the live
features); one client process (asyncio, one coroutine pair per client) sends 16 kHz PCM in
10 ms messages on the audio's own clock and stamps every frame as it arrives. A frame's
latency is its arrival less the moment the message holding the audio at its instant was sent
(as bench_live_latency.py). For each N: p50 / p99 / max over every frame of every session,
frames dropped, and the server's resident memory (VmRSS) during the sessions against before
them. The largest N whose p99 stays within the live budget (lookahead + the log-mel's right
context + 40 ms) is the answer.

Batch: a server of the small offline preset (K = 128); 120 s files POSTed to /v1/animate
(format npy), audio seconds per wall second, one request at a time and from two clients at
once; the baseline in the same run is `bstrain predict` of the same file through the CLI,
start-up included.

Checkpoints: a few training steps on the example data (timing does not depend on the weights).

    python benchmarks/bench_serve.py [--clients 1,2,4,6,8,10,12] [--seconds 30] [--batch-files 3] [--only live|batch]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
from bench_live_latency import RATE, checkpoints, speech  # noqa: E402

from tests.helpers import ServerProcess  # noqa: E402

CHUNK_S = 0.01


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def client(url: str, pcm: np.ndarray, t0: float, lat: list, info: dict) -> None:
    from websockets.asyncio.client import connect

    step = int(RATE * CHUNK_S)
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": RATE, "format": "binary"}))
        ready = json.loads(await ws.recv())
        fps = ready["fps"]

        async def send() -> None:
            for i in range(0, len(pcm), step):
                wait = t0 + (i + step) / RATE - time.perf_counter()  # this audio has been spoken by now
                if wait > 0:
                    await asyncio.sleep(wait)
                await ws.send(pcm[i : i + step].tobytes())
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        while True:
            msg = await ws.recv()
            now = time.perf_counter()
            if isinstance(msg, bytes):
                j = int.from_bytes(msg[:4], "little")
                sent = t0 + np.ceil((j / fps) / CHUNK_S + 1e-9) * CHUNK_S  # the message that held its instant
                if j / fps < len(pcm) / RATE:  # frames of the audio itself (not the end's padding)
                    lat.append(now - max(sent, t0 + CHUNK_S))
                continue
            doc = json.loads(msg)
            if doc["type"] == "end":
                info["dropped"] = info.get("dropped", 0) + doc["dropped"]
                info["frames"] = info.get("frames", 0) + doc["frames"]
                break
            if doc["type"] == "error":
                raise RuntimeError(doc["message"])
        await sender


async def sessions(url: str, pcm: np.ndarray, n: int, server_pid: int) -> dict:
    lat: list = []
    info: dict = {}
    t0 = time.perf_counter() + 0.5
    mid: list = []

    async def sample_memory() -> None:
        await asyncio.sleep(0.5 + len(pcm) / RATE / 2)
        mid.append(rss_mb(server_pid))

    await asyncio.gather(*(client(url, pcm, t0, lat, info) for _ in range(n)), sample_memory())
    a = np.array(lat) * 1000
    return {"n": n, "p50": np.median(a), "p99": np.percentile(a, 99), "max": a.max(), "rss_mb": mid[0], **info}


def post_file(url: str, data: bytes) -> float:
    t = time.perf_counter()
    req = urllib.request.Request(url + "/v1/animate?format=npy&fps=60", data=data, method="POST")
    urllib.request.urlopen(req, timeout=600).read()
    return time.perf_counter() - t


def batch(server: ServerProcess, wav: Path, files: int, checkpoint: Path, tmp: Path) -> None:
    """One request at a time (a file's own turnaround), then two clients posting files back to
    back (the server's throughput: audio seconds animated per wall second)."""
    from concurrent.futures import ThreadPoolExecutor

    data = wav.read_bytes()
    audio_s = len(data) / 2 / RATE
    post_file(server.url, data)  # the first request's lazy imports and allocations
    x = [audio_s / post_file(server.url, data) for _ in range(files)]
    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: post_file(server.url, data), range(2 * files)))
    both = 2 * files * audio_s / (time.perf_counter() - t)
    bin_ = Path(sys.executable).parent
    t = time.perf_counter()
    subprocess.run([str(bin_ / "bstrain"), "-q", "predict", str(wav), "--checkpoint", str(checkpoint), "--out",
                    str(tmp / "cli"), "--format", "npy", "--no-plot"], check=True)  # fmt: skip
    cli = audio_s / (time.perf_counter() - t)
    print(f"HTTP batch, {audio_s:.0f} s files, one request at a time: {np.median(x):.1f}x real time (median of "
          f"{files}; {min(x):.1f}-{max(x):.1f}); two clients at once: {both:.1f}x; bstrain predict through the "
          f"CLI, start-up included: {cli:.1f}x; ratios {np.median(x) / cli:.1f}x and {both / cli:.1f}x")  # fmt: skip


def live_half(ck: dict, args) -> None:
    pcm = speech(args.seconds)
    live = ServerProcess(ck["live"])
    try:
        model = live.model()
        budget = 1000 * model["lookahead"] / model["fps"] + 26 + 40
        idle = rss_mb(live.proc.pid)
        print(
            f"live server idle: {idle:.0f} MB resident; budget {budget:.0f} ms (lookahead + 26 ms + 40 ms); "
            f"{args.seconds:.0f} s of real speech per client in 10 ms messages, {os.cpu_count()} cores"
        )
        best = 0
        for n in (int(x) for x in args.clients.split(",")):
            r = asyncio.run(sessions(live.url.replace("http", "ws") + "/v1/stream", pcm, n, live.proc.pid))
            ok = r["p99"] <= budget
            best = n if ok else best
            print(f"  {n:3d} clients: p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms, max {r['max']:.0f} ms; "
                  f"{r.get('frames', 0)} frames, {r.get('dropped', 0)} dropped; resident {r['rss_mb']:.0f} MB "
                  f"({(r['rss_mb'] - idle) / n:.1f} MB per session){'' if ok else '  over budget'}")  # fmt: skip
        print(f"largest N within the budget: {best}")
    finally:
        live.stop()


def batch_half(ck: dict, args, tmp: Path) -> None:
    import soundfile as sf

    wav = tmp / "speech120.wav"
    sf.write(wav, speech(120.0), RATE, subtype="PCM_16")
    offline = ServerProcess(ck["offline"])
    try:
        batch(offline, wav, args.batch_files, ck["offline"], tmp)
    finally:
        offline.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,2,4,6,8,10,12")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--batch-files", type=int, default=3)
    ap.add_argument("--only", choices=("live", "batch"), help="run one half")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ck = checkpoints(tmp)
        if args.only != "batch":
            live_half(ck, args)
        if args.only != "live":
            batch_half(ck, args, tmp)


if __name__ == "__main__":
    main()
