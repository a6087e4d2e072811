"""Run inside Blender by tests/train/inference/test_blender_addon.py:

    blender -b --factory-startup --python-exit-code 1 --python blender_steps.py -- ADDON.zip PLAN.json OUT.json

installs the add-on zip as a user would (Preferences > Add-ons > Install, then enable), runs
the plan's steps through the add-on's operators and writes what each did to OUT.json: the
operator's result and report (or its error, as Blender raises it to a script), and the
objects' shape-key actions, keyframes and sequencer strips. The checks are the test's."""

import json
import sys
import time

import bpy

ZIP, PLAN, OUT = sys.argv[sys.argv.index("--") + 1 :]


def mesh(name: str, keys: list[str]) -> None:
    bpy.ops.mesh.primitive_plane_add()
    obj = bpy.context.active_object
    obj.name = name
    if keys:
        obj.shape_key_add(name="Basis")
        for k in keys:
            obj.shape_key_add(name=k)


def operator(name: str, kwargs: dict) -> dict:
    wm = bpy.context.window_manager
    wm["blendsync_report"] = ""
    try:
        result = getattr(bpy.ops.blendsync, name)(**kwargs)
        return {"result": sorted(result), "report": wm["blendsync_report"]}
    except RuntimeError as e:  # an ERROR report reaches a script as RuntimeError("Error: ...")
        return {"result": ["CANCELLED"], "error": str(e), "report": wm["blendsync_report"]}


def live(kwargs: dict, timeout_s: float = 120.0, marker: str = "", idle_s: float = 0.0, stop_after: int = 0) -> dict:
    """The live session, its timer run by hand: a background Blender has no event loop. marker:
    a file written once the session is open (the test starts its sender then); idle_s: stop
    once frames have come and none has for this long (UDP has no end of stream); stop_after:
    stop once this many frames have come (a user's Stop mid-session)."""
    import blendsync_blender.live_driver as driver

    out = operator("live_start", kwargs)
    if out["result"] != ["FINISHED"]:
        return out
    if marker:
        open(marker, "w").close()
    session = driver._current["session"]
    t0 = last = time.monotonic()
    seen = 0
    keys = bpy.context.active_object.data.shape_keys
    shown = None  # (frames applied, the key values the viewport showed then), while running
    while bpy.app.timers.is_registered(driver.tick) and time.monotonic() - t0 < timeout_s:
        if driver.tick() is None:
            break
        if driver._current["applied"]:
            shown = [driver._current["applied"], {k.name: k.value for k in keys.key_blocks}]
        if session.received != seen:
            seen, last = session.received, time.monotonic()
        elif idle_s and seen and time.monotonic() - last > idle_s:
            break
        if stop_after and seen >= stop_after:
            break
        time.sleep(1 / 120)
    out["stop"] = operator("live_stop", {})
    out["shown"] = shown
    log = [[f.n, f.time, list(f.values)] for f in session.log or []]
    out["ignored"] = getattr(session, "ignored", 0)
    out.update(state=session.state, message=session.message, applied=driver._current["applied"],
               channels=list(session.channels), log=log)  # fmt: skip
    return out


def dump() -> dict:
    objects = {}
    for obj in bpy.data.objects:
        keys = getattr(obj.data, "shape_keys", None)
        ad = keys.animation_data if keys is not None else None
        action = ad.action if ad is not None else None
        curves = {}
        if action is not None:
            for fc in action.fcurves:
                name = fc.data_path.split('"')[1]
                curves[name] = [list(p.co) for p in fc.keyframe_points]
                curves[name + "#interpolation"] = sorted({p.interpolation for p in fc.keyframe_points})
        values = {k.name: k.value for k in keys.key_blocks} if keys is not None else {}
        objects[obj.name] = {"action": action.name if action else None, "curves": curves, "values": values}
    se = bpy.context.scene.sequence_editor
    strips = [{"name": s.name, "frame_start": s.frame_start, "filepath": s.sound.filepath}
              for s in (se.sequences_all if se else [])]  # fmt: skip
    scene = bpy.context.scene
    menu = [f.__name__ for f in getattr(bpy.types.TOPBAR_MT_file_import.draw, "_draw_funcs", [])]
    return {"objects": objects, "strips": strips, "actions": len(bpy.data.actions), "import_menu": menu,
            "fps": scene.render.fps / scene.render.fps_base}  # fmt: skip


bpy.ops.preferences.addon_install(filepath=ZIP, overwrite=True)
bpy.ops.preferences.addon_enable(module="blendsync_blender")
results = []
for step in json.load(open(PLAN)):
    do = step.pop("do")
    if do == "mesh":
        mesh(**step)
        results.append({})
    elif do == "deselect":
        bpy.context.view_layer.objects.active = None
        results.append({})
    elif do == "activate":
        bpy.context.view_layer.objects.active = bpy.data.objects[step["name"]]
        results.append({})
    elif do == "scene_fps":
        bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = step["fps"], step.get("base", 1.0)
        results.append({})
    elif do == "live":
        results.append(live(**step))
    elif do == "dump":
        results.append(dump())
    elif do == "save":
        bpy.ops.wm.save_as_mainfile(filepath=step["path"])
        results.append({})
    elif do == "open":  # another file: a running session must stop (load_pre) and free its port
        import blendsync_blender.live_driver as driver

        bpy.ops.wm.open_mainfile(filepath=step["path"])
        results.append({"status": driver.status(), "active": driver.active()})
    elif do == "exec":  # a page's Python, as a user would run it (docs/blender.md)
        exec(compile(step["code"], step["name"], "exec"), {})
        results.append({})
    else:
        results.append(operator(do, step["kwargs"]))
with open(OUT, "w") as f:
    json.dump(results, f)
