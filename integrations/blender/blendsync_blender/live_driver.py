"""The live session's main-thread side: a timer drains the session's frames onto the shape
keys (the latest frame shows; with record on, every frame is also keyed at its own time), and
stops itself when the session ends. One session at a time."""

from __future__ import annotations

import queue

import bpy

from .apply import shape_key_owner
from .curve_files import CurveFileError
from .live import LiveSession
from .livelink_udp import LiveLinkListener
from .names import match, read_name_map

_current: dict = {}


def active() -> bool:
    s = _current.get("session")
    return s is not None and s.running


def status() -> str:
    s = _current.get("session")
    if s is None:
        return "live: no session"
    return f"live: {s.state}, {_current.get('applied', 0)} frames applied" + (f" ({s.message})" if s.message else "")


def start(context, op) -> str:
    """Opens the session (op: the start operator's settings) and its timer."""
    if active():
        raise CurveFileError("a live session is running: stop it first")
    keys = shape_key_owner(context.active_object)
    user_map = read_name_map(bpy.path.abspath(op.name_map_file)) if op.name_map_file else None
    if op.source == "LIVELINK":
        session = LiveLinkListener(op.port, op.listen_host, op.subject, keep_log=op.record).start()
        where = f"Live Link packets on {op.listen_host}:{op.port}"
    else:
        path = bpy.path.abspath(op.filepath)
        session = LiveSession(op.server_url, op.token, path, op.fps, keep_log=op.record).start()
        where = f"live session on {op.server_url}"
        session.ready.wait(15.0)
        if not session.channels:
            session.stop()
            raise CurveFileError(session.message or f"{op.server_url}: no ready message within 15 s")
    names = [k.name for k in keys.key_blocks]
    m = match(session.channels, names, op.name_map, user_map, basis=keys.reference_key.name)
    if not m.pairs:
        session.stop()
        raise CurveFileError(f"no channel of the {where} matches a shape key of {context.active_object.name!r}")
    action = None
    if op.record:
        ad = keys.animation_data or keys.animation_data_create()
        action = ad.action = bpy.data.actions.new(f"{context.active_object.name}_live")
    _current.clear()
    _current.update(
        session=session,
        keys=keys,
        gain=op.gain,
        record=action,
        start=op.start_frame,
        scene=context.scene,
        fcurves={},
        applied=0,
        pairs=[(session.channels.index(c), k) for c, k in m.pairs.items()],
    )
    bpy.app.timers.register(tick, first_interval=0.0)
    return f"{where}: {m.report()}"


def tick() -> float | None:
    """The timer: every frame waiting goes on the keys (and into the action when recording);
    returns the next interval, or None (the timer ends) once the session has ended."""
    s = _current.get("session")
    if s is None:
        return None
    keys, pairs, gain = _current["keys"], _current["pairs"], _current["gain"]
    latest = None
    while True:
        try:
            latest = s.frames.get_nowait()
        except queue.Empty:
            break
        _current["applied"] += 1
        if _current["record"] is not None:
            _record(latest, keys, pairs, gain)
    if latest is not None:
        for column, name in pairs:
            keys.key_blocks[name].value = latest.values[column] * gain
    if not s.running and s.frames.empty():
        return None
    return 1.0 / 120


def _record(frame, keys, pairs, gain) -> None:
    scene, action = _current["scene"], _current["record"]
    at = _current["start"] + frame.n * scene.render.fps / scene.render.fps_base / _current["session"].fps
    for column, name in pairs:
        fc = _current["fcurves"].get(name)
        if fc is None:
            path = f'key_blocks["{bpy.utils.escape_identifier(name)}"].value'
            fc = _current["fcurves"][name] = action.fcurves.new(path, action_group="blendsync live")
        k = fc.keyframe_points.insert(at, frame.values[column] * gain, options={"FAST"})
        k.interpolation = "LINEAR"


def stop() -> str:
    """Ends the session cleanly; frames already received are applied (and recorded)."""
    s = _current.get("session")
    if s is None:
        return "no live session"
    s.stop()
    tick()
    for fc in _current.get("fcurves", {}).values():
        fc.update()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    return status()
