"""The data manifest: one CSV row per take, validated whole before any work starts.

Columns: audio (required), targets, targets_fps, targets_order, split (train/val/test), speaker, id.
Relative paths are relative to the manifest. Every problem is reported with its row, and
the rows without problems still go through.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from blendsync.shared.channels import CHANNEL_ORDERS
from blendsync.shared.targets import TargetSpec, fps_problem

log = logging.getLogger(__name__)

COLUMNS = ("audio", "targets", "targets_fps", "targets_order", "split", "speaker", "id")
SPLITS = ("train", "val", "test")
# Share of speakers (or takes) a blank split sends to validation.
VAL_FRACTION = 0.2


class ManifestError(ValueError):
    """The manifest as a whole cannot be used (missing, unreadable, no audio column)."""


@dataclass(frozen=True, kw_only=True)
class ManifestRow:
    """row: 1-based data row; line: the line in the file (the header is line 1)."""

    row: int
    line: int
    id: str
    audio: Path
    targets: TargetSpec | None
    split: str
    speaker: str | None

    def to_entry(self) -> dict:
        return {
            "row": self.row,
            "id": self.id,
            "audio": str(self.audio),
            "targets": self.targets.describe() if self.targets else None,
            "split": self.split,
            "speaker": self.speaker,
        }


@dataclass(frozen=True, kw_only=True)
class RowProblem:
    manifest: Path
    row: int
    line: int
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.manifest}:{self.line}: row {self.row} ({self.file}): {self.message}"


@dataclass(frozen=True)
class Manifest:
    path: Path
    rows: tuple[ManifestRow, ...]
    problems: tuple[RowProblem, ...]
    n_rows: int

    @property
    def name(self) -> str:
        return self.path.stem


def not_a_file(path: Path) -> str:
    """What a path that is not a regular file is: "file not found: P", or "P is a
    directory/named pipe (FIFO)/…, not a file", or a symlink loop."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as e:  # e.g. a symlink loop (ELOOP)
        return f"{path}: cannot be read ({e.strerror or e})"
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    what = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"{path} is {what}, not a file"


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by the text alone (same on every machine and run)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16**12


def assign_splits(groups: list[str]) -> list[str]:
    """Blank splits -> train/val by a stable hash of each row's group (speaker, else id).

    At least one group goes to validation whenever there are two or more groups, so a
    small manifest never ends with an empty validation split.
    """
    distinct = sorted(set(groups))
    val = {g for g in distinct if stable_fraction(g) < VAL_FRACTION}
    if len(distinct) >= 2:
        if not val:
            val = {min(distinct, key=stable_fraction)}
        if val == set(distinct):
            val.discard(max(distinct, key=stable_fraction))
    return ["val" if g in val else "train" for g in groups]


def read_manifest(path: str | Path) -> Manifest:
    """Every row checked (_check_row); blank splits assigned by a stable hash (assign_splits)."""
    p = Path(path)
    header, raw = _read_csv(p)
    if "audio" not in header:
        raise ManifestError(f"{p}: no 'audio' column (columns: {header})")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        log.warning("%s: ignoring unknown column(s) %s", p, unknown)
    base = p.parent.resolve()
    rows: list[dict] = []
    problems: list[RowProblem] = []
    seen_ids: dict[str, int] = {}
    for n, (line, r) in enumerate(raw, start=1):
        row, errs = _check_row(r, base)
        rid = row["id"]
        if rid and rid in seen_ids:
            errs.append(f"id {rid!r} repeats row {seen_ids[rid]}")
        elif rid:
            seen_ids[rid] = n
        if errs:
            problems += [
                RowProblem(manifest=p, row=n, line=line, file=r.get("audio", "") or "<no audio>", message=e)
                for e in errs
            ]
            continue
        rows.append(dict(row=n, line=line, **row))
    blank = [i for i, r in enumerate(rows) if not r["split"]]
    if blank:
        use_speaker = len({rows[i]["speaker"] for i in blank if rows[i]["speaker"]}) >= 2
        groups = [(rows[i]["speaker"] if use_speaker and rows[i]["speaker"] else rows[i]["id"]) for i in blank]
        for i, s in zip(blank, assign_splits(groups)):
            rows[i]["split"] = s
    return Manifest(p, tuple(ManifestRow(**r) for r in rows), tuple(problems), len(raw))


def _read_csv(p: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line, {column: stripped text})] of the non-blank rows)."""
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            raw = [(reader.line_num, r) for r in reader]
    except FileNotFoundError:
        raise ManifestError(f"{p}: manifest not found") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{p}: not a readable CSV manifest ({e})") from None
    raw = [(line, {(k or "").strip(): (v or "").strip() for k, v in r.items() if k is not None}) for line, r in raw]
    return header, [(line, r) for line, r in raw if any(r.values())]


def _check_row(r: dict, base: Path) -> tuple[dict, list[str]]:
    """A row's fields (id, audio, targets, split, speaker) and every problem with them."""
    errs: list[str] = []
    audio_txt = r.get("audio", "")
    audio = _resolve(audio_txt, base) if audio_txt else None
    if audio is None:
        errs.append("the audio column is empty")
    elif not audio.is_file():
        errs.append(f"audio {not_a_file(audio)}")
    fps = None
    fps_txt = r.get("targets_fps", "")
    if fps_txt:
        bad = fps_problem(fps_txt)
        if bad:
            errs.append(f"targets_fps: {bad}")
        else:
            fps = float(fps_txt)
    spec = None
    tgt_txt = r.get("targets", "")
    order = r.get("targets_order", "") or None
    if order is not None and order not in CHANNEL_ORDERS:
        errs.append(f"targets_order {order!r} is not one of {', '.join(CHANNEL_ORDERS)}")
    if tgt_txt:
        spec = TargetSpec.parse(tgt_txt, base, fps, order)
        if order is not None and spec.kind == "livelink":
            errs.append("targets_order is for arrays; a Live Link Face CSV is read by its column names")
        if spec.kind == "unknown":
            errs.append(f"targets {tgt_txt!r}: unknown format (use .csv, .npy, .npz, .h5:/dataset)")
        elif not spec.path.is_file():
            errs.append(f"targets {not_a_file(spec.path)}")
        elif spec.kind == "npy" and fps is None:
            errs.append(f"targets {tgt_txt!r} is an .npy array: give its frame rate in targets_fps")
    elif fps_txt:
        errs.append("targets_fps is set but targets is empty")
    split = r.get("split", "").lower()
    if split and split not in SPLITS:
        errs.append(f"split must be one of {'/'.join(SPLITS)} or empty, got {r.get('split')!r}")
    rid = r.get("id", "") or (_default_id(audio, base) if audio else "")
    return dict(id=rid, audio=audio, targets=spec, split=split, speaker=r.get("speaker") or None), errs


def _resolve(text: str, base: Path) -> Path:
    q = Path(text).expanduser()
    return q if q.is_absolute() else base / q


def _default_id(audio: Path, base: Path) -> str:
    """The audio path relative to the manifest, without extension (unique where stems clash)."""
    try:
        rel = audio.resolve().relative_to(base)
    except (ValueError, OSError, RuntimeError):  # outside the manifest's folder, or a symlink loop
        rel = audio
    return str(rel.with_suffix(""))
