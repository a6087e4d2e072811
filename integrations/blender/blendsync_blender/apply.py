"""Curves onto an object's shape keys as an Action of F-curves, and the audio into the
sequencer at the same frame. Everything is checked before anything is changed: an import
either happens whole or leaves the file as it was."""

from __future__ import annotations

import os
from dataclasses import dataclass

import bpy

from .curve_files import CurveFileError, Curves
from .names import Match, match, read_name_map, reduced
from .timing import on_frames, rate_for_scene, scene_rate

LINEAR = 1  # Keyframe.interpolation's enum value for 'LINEAR' (foreach_set takes the number)


@dataclass(frozen=True)
class ImportOptions:
    """start_frame: the scene frame of the file's first instant; gain: values times this;
    channels: the subset to import, names as the
    arkit map compares them (empty: all); mode REPLACE (a new action) or ADD (into the
    current one, its keys in the imported range replaced); set_scene_fps: the scene takes the
    file's rate instead of the curves being resampled to the scene's; name_map: names.NAME_MAPS;
    name_map_file: channel = shape key lines; audio: a sound file to put in the sequencer."""

    start_frame: int = 1
    gain: float = 1.0
    channels: tuple[str, ...] = ()
    mode: str = "REPLACE"
    set_scene_fps: bool = False
    name_map: str = "arkit"
    name_map_file: str = ""
    audio: str = ""


def shape_key_owner(obj):
    """The object's Key (its shape keys), or CurveFileError saying what is missing."""
    if obj is None:
        raise CurveFileError("no active object: select the mesh whose shape keys the curves drive")
    keys = getattr(obj.data, "shape_keys", None) if obj.data is not None else None
    if keys is None or len(keys.key_blocks) < 2:
        raise CurveFileError(f"object {obj.name!r} has no shape keys to drive (add them, or pick the face mesh)")
    return keys


def plan(obj, curves: Curves, options: ImportOptions) -> tuple[Match, list[int]]:
    """(the channel -> shape key match, the curves' columns to import), checked."""
    keys = shape_key_owner(obj)
    if options.mode not in ("REPLACE", "ADD"):
        raise CurveFileError(f"mode must be REPLACE or ADD, got {options.mode!r}")
    if not 0 <= options.gain <= 10:
        raise CurveFileError(f"gain must be from 0 to 10, got {options.gain:g}")
    if options.audio and not os.path.isfile(options.audio):
        raise CurveFileError(f"{options.audio}: no such audio file")
    by_reduced = {reduced(c): c for c in curves.channels}
    subset = {n: n if n in curves.channels else by_reduced.get(reduced(n)) for n in options.channels}
    unknown = [n for n, c in subset.items() if c is None]
    if unknown:
        raise CurveFileError(f"{curves.source}: no channel(s) {', '.join(unknown)} in the file")
    wanted = [c for c in curves.channels if not subset or c in subset.values()]
    user_map = read_name_map(options.name_map_file) if options.name_map_file else None
    m = match(wanted, [k.name for k in keys.key_blocks], options.name_map, user_map, basis=keys.reference_key.name)
    if not m.pairs:
        raise CurveFileError(
            f"{curves.source}: no channel matches a shape key of {obj.name!r} ({m.report()}); "
            "give a name map file for this rig"
        )
    return m, [curves.channels.index(c) for c in m.pairs]


def key_path(name: str) -> str:
    """The F-curve data path of a shape key's value."""
    return f'key_blocks["{bpy.utils.escape_identifier(name)}"].value'


def put_action(keys, action) -> None:
    """action on the shape keys; the one it replaces keeps a fake user (not lost at the next save)."""
    ad = keys.animation_data or keys.animation_data_create()
    if ad.action is not None and ad.action != action:
        ad.action.use_fake_user = True
    ad.action = action


def import_curves(scene, obj, curves: Curves, options: ImportOptions) -> str:
    """Puts the curves on obj's shape keys; returns the report (what went where, what did
    not match). CurveFileError, before any change, for anything that stops it."""
    m, columns = plan(obj, curves, options)
    audio = _add_sound(scene, options.audio, options.start_frame) if options.audio else ""  # checked here
    if options.set_scene_fps:
        scene.render.fps, scene.render.fps_base = rate_for_scene(curves.fps)
    fps = scene_rate(scene.render.fps, scene.render.fps_base)
    values = on_frames(curves, fps, columns, options.gain)
    first, last = options.start_frame, options.start_frame + len(values) - 1
    keys = obj.data.shape_keys
    action = keys.animation_data.action if keys.animation_data else None
    if options.mode == "REPLACE" or action is None:
        action = bpy.data.actions.new(f"{obj.name}_{os.path.splitext(os.path.basename(curves.source))[0]}")
        put_action(keys, action)
    for j, key_name in enumerate(m.pairs.values()):
        path = key_path(key_name)
        fc = action.fcurves.find(path) or action.fcurves.new(path, action_group="blendsync")
        _set_keys(fc, first, [row[j] for row in values])
    scene.frame_end = max(scene.frame_end, last)
    return (
        f"{len(values)} frames ({first}-{last} at {fps:g} fps) of {os.path.basename(curves.source)} on "
        f"{obj.name!r}, action {action.name!r}: {m.report()}{audio}"
    )


def _set_keys(fc, first: int, values: list[float]) -> None:
    """values[i] at frame first + i, linear between keys; keys already in that range go."""
    last = first + len(values) - 1
    doomed = [p for p in fc.keyframe_points if first - 0.5 <= p.co[0] <= last + 0.5]
    for p in reversed(doomed):
        fc.keyframe_points.remove(p, fast=True)
    old = len(fc.keyframe_points)
    fc.keyframe_points.add(len(values))
    co = [0.0] * (2 * (old + len(values)))
    fc.keyframe_points.foreach_get("co", co)
    interp = [0] * (old + len(values))
    fc.keyframe_points.foreach_get("interpolation", interp)
    for i, v in enumerate(values):
        co[2 * (old + i)], co[2 * (old + i) + 1] = first + i, v
        interp[old + i] = LINEAR
    fc.keyframe_points.foreach_set("co", co)
    fc.keyframe_points.foreach_set("interpolation", interp)
    fc.update()


def _add_sound(scene, path: str, frame: int) -> str:
    """The sound file as a strip at frame (one strip per file: an earlier import's is moved
    there), or CurveFileError, with nothing added, for a file Blender cannot play."""
    se = scene.sequence_editor or scene.sequence_editor_create()
    same = [s for s in se.sequences_all if s.type == "SOUND" and bpy.path.abspath(s.sound.filepath) == path]
    if same:
        same[0].frame_start = frame
        return f"; audio {same[0].name!r} moved to frame {frame}"
    used = {s.channel for s in se.sequences_all}
    channel = next(c for c in range(1, 129) if c not in used)
    strip = se.sequences.new_sound(os.path.basename(path), path, channel, frame)
    if strip.frame_final_duration <= 1:  # Blender reads what it cannot decode as silence of one frame
        sound = strip.sound
        se.sequences.remove(strip)
        if sound is not None and sound.users == 0:
            bpy.data.sounds.remove(sound)
        raise CurveFileError(f"{path}: not a sound file Blender can play")
    return f"; audio {strip.name!r} at frame {strip.frame_start:g} (channel {channel})"
