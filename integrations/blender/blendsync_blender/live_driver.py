"""The live session's main-thread side: a timer drains the session's frames onto the shape
keys (the latest frame shows; with record on, every frame is also keyed at its own time), and
stops itself when the session ends. One session at a time.

Blender data is held by name and looked up on every tick: undo and file loads replace the
objects a reference would point to. Loading a file stops the session (load_pre)."""

from __future__ import annotations

import queue

import bpy
from bpy.app.handlers import persistent

from .apply import key_path, put_action, shape_key_owner
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


def start(context, op, url: str = "", token: str = "") -> str:
    """Opens the session (op: the start operator's settings; url, token: the server's) and its
    timer."""
    if active():
        raise CurveFileError("a live session is running: stop it first")
    keys = shape_key_owner(context.active_object)
    user_map = read_name_map(bpy.path.abspath(op.name_map_file)) if op.name_map_file else None
    if op.source == "LIVELINK":
        session = LiveLinkListener(op.port, op.listen_host, op.subject, keep_log=op.record).start()
        where = f"Live Link packets on {op.listen_host}:{op.port}"
    else:
        path = bpy.path.abspath(op.filepath)
        session = LiveSession(url, token, path, op.fps, keep_log=op.record).start()
        where = f"live session on {url}"
        session.ready.wait(15.0)
        if not session.channels:
            session.stop()
            raise CurveFileError(session.message or f"{url}: no ready message within 15 s")
    names = [k.name for k in keys.key_blocks]
    m = match(session.channels, names, op.name_map, user_map, basis=keys.reference_key.name)
    if not m.pairs:
        session.stop()
        raise CurveFileError(f"no channel of the {where} matches a shape key of {context.active_object.name!r}")
    action = None
    if op.record:
        # Keyed aside and put on the keys when the session ends: an action on them while it runs
        # would set them back to its keys each time Blender evaluates the animation.
        action = bpy.data.actions.new(f"{context.active_object.name}_live")
        action.use_fake_user = True  # a recording is kept even if it is never put on the keys
    _current.clear()
    _current.update(
        session=session,
        object=context.active_object.name,
        gain=op.gain,
        record=action.name if action else None,
        start=op.start_frame,
        scene=context.scene.name,
        applied=0,
        pairs=[(session.channels.index(c), k) for c, k in m.pairs.items()],
    )
    bpy.app.timers.register(tick, first_interval=0.0)
    return f"{where}: {m.report()}"


def _targets():
    """(the object's Key, the scene, the recording action or None), looked up by name; None
    when undo or a file load took the object or scene away."""
    obj = bpy.data.objects.get(_current["object"])
    keys = getattr(obj.data, "shape_keys", None) if obj is not None and obj.data is not None else None
    scene = bpy.data.scenes.get(_current["scene"])
    if keys is None or scene is None:
        return None
    action = bpy.data.actions.get(_current["record"]) if _current["record"] else None
    return keys, scene, action


def tick() -> float | None:
    """The timer: every frame waiting goes on the keys (and into the action when recording);
    returns the next interval, or None (the timer ends) once the session has ended or its
    object is gone (the session is then stopped)."""
    s = _current.get("session")
    if s is None:
        return None
    targets = _targets()
    if targets is None:
        s.stop()
        s.message = f"{_current['object']!r} is gone (undo or another file): session stopped"
        return None
    keys, scene, action = targets
    pairs, gain = _current["pairs"], _current["gain"]
    latest = None
    curves = {fc.data_path: fc for fc in action.fcurves} if action is not None else None
    while True:
        try:
            latest = s.frames.get_nowait()
        except queue.Empty:
            break
        _current["applied"] += 1
        if action is not None:
            _record(latest, scene, action, curves, pairs, gain)
    if latest is not None:
        for column, name in pairs:
            block = keys.key_blocks.get(name)
            if block is not None:
                block.value = latest.values[column] * gain
    if not s.running and s.frames.empty():
        _finish(keys, action)
        return None
    return 1.0 / 120


def _record(frame, scene, action, curves: dict, pairs, gain) -> None:
    """frame keyed at start + its time; curves: the action's F-curves by data path (this tick's)."""
    at = _current["start"] + frame.n * scene.render.fps / scene.render.fps_base / _current["session"].fps
    for column, name in pairs:
        path = key_path(name)
        fc = curves.get(path)
        if fc is None:
            fc = curves[path] = action.fcurves.new(path, action_group="blendsync live")
        k = fc.keyframe_points.insert(at, frame.values[column] * gain, options={"FAST"})
        k.interpolation = "LINEAR"


def _finish(keys, action) -> None:
    """The recording made whole (curves sorted), put on the keys (the action it replaces kept)
    and an undo step for it."""
    if action is None or action.name != _current.get("record"):
        return
    _current["record"] = None  # once
    for fc in action.fcurves:
        fc.update()
    put_action(keys, action)
    try:
        bpy.ops.ed.undo_push(message="blendsync live recording")
    except RuntimeError:  # no window (a background Blender): nothing to undo to
        pass


def stop() -> str:
    """Ends the session cleanly; frames already received are applied (and recorded) where
    their object still exists."""
    s = _current.get("session")
    if s is None:
        return "no live session"
    s.stop()
    if _targets() is not None:
        tick()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    return status()


@persistent
def stop_on_load(*_args) -> None:
    """load_pre: another file replaces every object the session drives."""
    s = _current.get("session")
    if s is not None and s.running:
        s.stop()
        s.message = "another file was loaded: session stopped"
