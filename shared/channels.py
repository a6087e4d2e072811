"""Target channel sets: the 52 ARKit blendshapes (defined here and nowhere else) and custom rigs.

A channel set carries its groups (mouth, expression) because the trainer's loss weights
them separately; a custom rig may leave them empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The 52 ARKit blendshapes in camelCase, in the column order the Live Link Face app writes
# (which is not Unreal's enum order). Everything that needs "the ARKit channels" uses this.
ARKIT_52: tuple[str, ...] = (
    "eyeBlinkLeft",
    "eyeLookDownLeft",
    "eyeLookInLeft",
    "eyeLookOutLeft",
    "eyeLookUpLeft",
    "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight",
    "eyeLookDownRight",
    "eyeLookInRight",
    "eyeLookOutRight",
    "eyeLookUpRight",
    "eyeSquintRight",
    "eyeWideRight",
    "jawForward",
    "jawRight",
    "jawLeft",
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthRight",
    "mouthLeft",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "noseSneerLeft",
    "noseSneerRight",
    "tongueOut",
)

# Live Link Face head and eye rotation columns that follow the 52 curves.
LIVELINK_ROTATIONS: tuple[str, ...] = (
    "HeadYaw",
    "HeadPitch",
    "HeadRoll",
    "LeftEyeYaw",
    "LeftEyePitch",
    "LeftEyeRoll",
    "RightEyeYaw",
    "RightEyePitch",
    "RightEyeRoll",
)


# The emotion columns a 68-column layout appends (not curves: dropped on import, 0 on output).
EMOTION_COLUMNS: tuple[str, ...] = ("Angry", "Disgusted", "Fearful", "Happy", "Neutral", "Sad", "Surprised")


def _unreal_order(app: tuple[str, ...]) -> tuple[str, ...]:
    """Unreal's EARFaceBlendShape order (also the order of a Live Link Face packet's values):
    the app's CSV order with jawLeft/jawRight and mouthLeft/mouthRight the other way round."""
    swap = {"jawRight": "jawLeft", "jawLeft": "jawRight", "mouthRight": "mouthLeft", "mouthLeft": "mouthRight"}
    return tuple(swap.get(n, n) for n in app)


# Named orders of the ARKit curves, each given by name (outputs are mapped by name, never by
# position). Rotations are the head and eye columns a 61-value layout carries after the 52.
CHANNEL_ORDERS: dict[str, tuple[str, ...]] = {
    "livelink": ARKIT_52,  # Live Link Face CSV columns
    "unreal": _unreal_order(ARKIT_52),  # EARFaceBlendShape, Live Link packets
    "alphabetical": tuple(sorted(ARKIT_52)),  # MediaPipe (without _neutral), EmoTalk
    "livelink61": ARKIT_52 + LIVELINK_ROTATIONS,  # the app's 61 CSV columns
    "unreal61": _unreal_order(ARKIT_52) + LIVELINK_ROTATIONS,  # the 61 values of a packet
    # 61 CSV columns plus 7 emotion scores, as some speech-to-face tools write them
    "livelink68": ARKIT_52 + LIVELINK_ROTATIONS + EMOTION_COLUMNS,
}


def check_order(channels: list[str] | tuple[str, ...], order: str) -> tuple[str, ...]:
    """The order's names, or ValueError for an unknown order or one with curves the channels
    lack (rotations and emotion scores excepted: written as 0)."""
    if order not in CHANNEL_ORDERS:
        raise ValueError(f"unknown channel order {order!r}; choose from {', '.join(CHANNEL_ORDERS)}")
    names = CHANNEL_ORDERS[order]
    have = set(channels)
    missing = [n for n in names if n not in have and n not in LIVELINK_ROTATIONS + EMOTION_COLUMNS]
    if missing:
        raise ValueError(
            f"channel order {order!r} needs {len(missing)} curves this model does not predict: {missing[:5]}"
        )
    return names


def reorder(values, channels: list[str] | tuple[str, ...], order: str):
    """values (T, C) in `channels` order -> (T, len(order)) in the named order: by name;
    channels the model does not predict (the rotations) are 0. Raises ValueError for an
    unknown order or a model without one of the order's curves."""
    import numpy as np

    names = check_order(channels, order)
    where = {c: i for i, c in enumerate(channels)}
    values = np.asarray(values)
    out = np.zeros((values.shape[0], len(names)), values.dtype)
    for j, n in enumerate(names):
        if n in where:
            out[:, j] = values[:, where[n]]
    return out


def pascal_case(name: str) -> str:
    """ARKit camelCase -> the app's PascalCase column name (jawOpen -> JawOpen)."""
    return name[:1].upper() + name[1:]


def arkit_mouth_group(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in names if n.startswith(("jaw", "mouth")) or n in ("cheekPuff", "tongueOut"))


def arkit_expression_group(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in names if n.startswith(("brow", "eye", "cheekSquint", "noseSneer")))


@dataclass(frozen=True)
class ChannelSet:
    """An ordered list of target channels and the loss groups they fall into."""

    name: str
    channels: tuple[str, ...]
    mouth: tuple[str, ...] = ()
    expression: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError(f"channel set {self.name!r} has no channels")
        if len(set(self.channels)) != len(self.channels):
            dupes = sorted({c for c in self.channels if self.channels.count(c) > 1})
            raise ValueError(f"channel set {self.name!r} repeats channels: {dupes}")
        unknown = [c for c in (*self.mouth, *self.expression) if c not in self.channels]
        if unknown:
            raise ValueError(f"channel set {self.name!r}: groups name unknown channels {unknown}")

    @property
    def other(self) -> tuple[str, ...]:
        grouped = set(self.mouth) | set(self.expression)
        return tuple(c for c in self.channels if c not in grouped)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "channels": list(self.channels),
            "mouth": list(self.mouth),
            "expression": list(self.expression),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChannelSet:
        return cls(
            name=str(d["name"]),
            channels=tuple(d["channels"]),
            mouth=tuple(d.get("mouth", ())),
            expression=tuple(d.get("expression", ())),
        )


ARKIT = ChannelSet(
    name="arkit52",
    channels=ARKIT_52,
    mouth=arkit_mouth_group(ARKIT_52),
    expression=arkit_expression_group(ARKIT_52),
)


def read_channel_file(path: str | Path) -> tuple[str, ...]:
    """Read a channel list: one name per line; an optional first line holding the count
    (as in rig exports) is checked against the number of names that follow."""
    p = Path(path)
    lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    if lines and lines[0].isdigit():
        count, names = int(lines[0]), lines[1:]
        if count != len(names):
            raise ValueError(f"{p}: first line says {count} channels but {len(names)} names follow")
    else:
        names = lines
    if not names:
        raise ValueError(f"{p}: no channel names")
    return tuple(names)
