"""Which curve drives which shape key: by name, the way rigs spell the ARKit names (jawOpen,
JawOpen, jaw_open, Jaw_Open, blendShape1.jawOpen, eyeBlink_L, A25_Jaw_Open), or by a user's
name map for rigs that name them otherwise."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .curve_files import CurveFileError

# Name maps built in: how a shape key's name is reduced before it is compared with a channel's.
#   arkit: case, separators and the prefixes exporters add are ignored; _L/_R are Left/Right
#          (ARKit as in Apple's docs and Live Link Face's PascalCase; VRM and Ready Player Me
#          avatars' ARKit-named morphs; Character Creator's A01_..A52_ names)
#   exact: the names must be equal
NAME_MAPS = ("arkit", "exact")
_SIDE = re.compile(r"[_.\- ]([lr])$", re.IGNORECASE)  # eyeBlink_L, eye_blink.r


_SEPARATORS = re.compile(r"[.:|]")
_NOT_A_NAME = re.compile(r"^(?:[lr]|\d+)$", re.IGNORECASE)  # a side (eye.L) or Blender's copy number (.001)


def stripped(name: str) -> str:
    """A name without the prefix an exporter added (blendShape1.jawOpen, Face:jawOpen ->
    jawOpen; A25_Jaw_Open -> Jaw_Open), keeping Blender's side suffix (Face.Smile.L ->
    Smile.L): the shortest rest after a separator that is more than a side letter or a number."""
    name = re.sub(r"^a\d\d_", "", name.strip(), flags=re.IGNORECASE)
    for m in reversed(list(_SEPARATORS.finditer(name))):
        rest = name[m.end() :]
        if rest and not _NOT_A_NAME.match(rest):
            return rest
    return name


def reduced(name: str) -> str:
    """A name as the arkit map compares it: jaw_Open, JawOpen, blendShape1.jawOpen -> jawopen."""
    name = _SIDE.sub(lambda m: "left" if m.group(1).lower() == "l" else "right", name.strip())
    return re.sub(r"[^0-9a-z]", "", stripped(name).lower())


@dataclass(frozen=True)
class Match:
    """pairs: channel -> shape key it drives (in the curves' channel order); unmatched_channels:
    curves with no shape key; unused_keys: shape keys no curve drives (the Basis excepted)."""

    pairs: dict[str, str]
    unmatched_channels: tuple[str, ...]
    unused_keys: tuple[str, ...]
    # lines of the user's name map naming a channel the curves lack or a key the mesh lacks
    map_problems: tuple[str, ...] = ()

    def report(self, limit: int = 8) -> str:
        def some(names: tuple[str, ...]) -> str:
            more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
            return ", ".join(names[:limit]) + more

        out = f"{len(self.pairs)} channels on shape keys"
        if self.unmatched_channels:
            out += f"; {len(self.unmatched_channels)} channels with no shape key: {some(self.unmatched_channels)}"
        if self.unused_keys:
            out += f"; {len(self.unused_keys)} shape keys with no channel: {some(self.unused_keys)}"
        if self.map_problems:
            out += f"; the name map's {some(self.map_problems)} matched nothing"
        return out


def match(
    channels: tuple[str, ...] | list[str],
    shape_keys: list[str],
    name_map: str = "arkit",
    user_map: dict[str, str] | None = None,
    basis: str | None = None,
) -> Match:
    """Pair channels with shape keys, in passes over all the channels so that a closer match is
    never taken by a looser one: the user's map (channel -> key name), equal names, then for
    the arkit map equal names without an exporter's prefix, then equal reduced names. A key is
    driven by one channel at most; among keys that compare alike the first free one is taken."""
    if name_map not in NAME_MAPS:
        raise ValueError(f"unknown name map {name_map!r}; choose from {', '.join(NAME_MAPS)}")
    keys = [k for k in shape_keys if k != basis]
    taken: set[str] = set()
    pairs: dict[str, str] = {}
    problems = tuple(
        f"{c} = {k} (no {'channel ' + c if c not in channels else 'shape key ' + k})"
        for c, k in (user_map or {}).items()
        if c not in channels or k not in keys
    )
    for c, k in (user_map or {}).items():
        if c in channels and k in keys and k not in taken:
            pairs[c] = k
            taken.add(k)
    for compare in (str, stripped, reduced) if name_map == "arkit" else (str,):
        alike: dict[str, list[str]] = {}
        for k in keys:
            alike.setdefault(compare(k), []).append(k)
        for c in channels:
            if c in pairs:
                continue
            key = next((k for k in alike.get(compare(c), []) if k not in taken), None)
            if key is not None:
                pairs[c] = key
                taken.add(key)
    return Match(
        {c: pairs[c] for c in channels if c in pairs},
        tuple(c for c in channels if c not in pairs),
        tuple(k for k in keys if k not in taken),
        problems,
    )


def read_name_map(path: str | Path) -> dict[str, str]:
    """A name map file: one `channel = shape key` per line (also `channel,shape key` or a tab);
    blank lines and lines starting with # are skipped."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CurveFileError(f"{p}: cannot read the name map ({e})") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"\s*(?:=|,|\t)\s*", line, maxsplit=1)
        if len(parts) != 2 or not all(parts):
            raise CurveFileError(f"{p}: line {n}: expected 'channel = shape key', got {line!r}")
        if parts[0] in out:
            raise CurveFileError(f"{p}: line {n}: channel {parts[0]!r} mapped twice")
        out[parts[0]] = parts[1]
    if not out:
        raise CurveFileError(f"{p}: no 'channel = shape key' lines")
    return out
