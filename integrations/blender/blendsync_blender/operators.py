"""The add-on's operators and its panel: File > Import > blendsync curves, animate a sound file
through a running bstrain serve, and a live session driving the shape keys."""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import live_driver
from .apply import ImportOptions, import_curves, shape_key_owner
from .curve_files import CurveFileError, read_curves
from .names import NAME_MAPS
from .server import animate_file

MODES = [
    ("REPLACE", "Replace", "A new action on the shape keys"),
    ("ADD", "Add", "Into the current action: its keys in the imported frames are replaced"),
]
MAPS = [(m, m, "") for m in NAME_MAPS]


class BlendsyncPreferences(bpy.types.AddonPreferences):
    """The server and its token, kept in the preferences: a token given to an operator would be
    written into the Info editor's log of the operator's call."""

    bl_idname = __package__
    server_url: StringProperty(name="Server", default="http://127.0.0.1:8000")
    token: StringProperty(
        name="Token", default="", subtype="PASSWORD", description="bstrain serve's --token (or set BLENDSYNC_TOKEN)"
    )

    def draw(self, context):
        self.layout.prop(self, "server_url")
        self.layout.prop(self, "token")


def server_and_token(op, context) -> tuple[str, str]:
    """The operator's server and token where given, else the preferences', else BLENDSYNC_TOKEN."""
    prefs = context.preferences.addons[__package__].preferences
    url = op.server_url or prefs.server_url
    return url, op.token or prefs.token or os.environ.get("BLENDSYNC_TOKEN", "")


def _report(op, wm, level: str, text: str) -> None:
    """The operator's report (status bar, Info editor, console) and the panel's last line."""
    op.report({level}, text)
    wm["blendsync_report"] = f"{level}: {text}"


class ImportSettings:
    """The import options every way in shares (bpy properties on the operator)."""

    start_frame: IntProperty(name="Start frame", default=1, description="Scene frame of the file's first instant")
    gain: FloatProperty(name="Gain", default=1.0, min=0.0, max=10.0, description="Curve values times this")
    channel_subset: StringProperty(name="Channels", default="", description="Comma-separated channels (empty: all)")
    mode: EnumProperty(name="Mode", items=MODES, default="REPLACE")
    set_scene_fps: BoolProperty(
        name="Set scene fps",
        default=False,
        description="The scene takes the file's rate (else the curves are resampled)",
    )
    name_map: EnumProperty(
        name="Name map",
        items=MAPS,
        default="arkit",
        description="arkit: case, separators, exporters' prefixes and _L/_R ignored",
    )
    name_map_file: StringProperty(
        name="Name map file",
        default="",
        subtype="FILE_PATH",
        description="Lines of 'channel = shape key' for other rigs",
    )

    def import_options(self, audio: str) -> ImportOptions:
        subset = tuple(c.strip() for c in self.channel_subset.split(",") if c.strip())
        return ImportOptions(
            start_frame=self.start_frame,
            gain=self.gain,
            channels=subset,
            mode=self.mode,
            set_scene_fps=self.set_scene_fps,
            name_map=self.name_map,
            name_map_file=bpy.path.abspath(self.name_map_file),
            audio=audio,
        )


SOUND_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".mov", ".mp4")


def _sound_beside(path: str) -> str:
    """The sound file next to a curve file with its stem (take01.csv -> take01.wav, or the
    take's .mov as the Live Link Face app records it), any case of suffix, or ''."""
    folder, stem = os.path.split(os.path.splitext(path)[0])
    try:
        names = {n.lower(): n for n in os.listdir(folder or ".")}
    except OSError:
        return ""
    for suffix in SOUND_SUFFIXES:
        name = names.get((stem + suffix).lower())
        if name:
            return os.path.join(folder, name)
    return ""


class BLENDSYNC_OT_import_curves(bpy.types.Operator, ImportHelper, ImportSettings):
    """Put a Live Link Face CSV, blendsync JSON or .npy of curves on the active object's shape keys"""

    bl_idname = "blendsync.import_curves"
    bl_label = "Import blendsync curves"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default="*.csv;*.json;*.npy", options={"HIDDEN"})
    channels_file: StringProperty(
        name="Channel list (.npy)", default="", subtype="FILE_PATH", description="One name per line: the .npy's columns"
    )
    npy_fps: FloatProperty(name="Rate of the .npy", default=30.0, min=1.0, max=1000.0)
    audio: StringProperty(
        name="Audio",
        default="",
        subtype="FILE_PATH",
        description="Sound file for the sequencer (empty: the curve file's stem .wav if there)",
    )
    add_audio: BoolProperty(name="Add audio", default=True)

    def execute(self, context):
        wm = context.window_manager
        try:
            path = bpy.path.abspath(self.filepath)
            channels = bpy.path.abspath(self.channels_file) if self.channels_file else None
            curves = read_curves(path, channels, self.npy_fps)
            audio = (bpy.path.abspath(self.audio) or _sound_beside(path)) if self.add_audio else ""
            text = import_curves(context.scene, context.active_object, curves, self.import_options(audio))
        except CurveFileError as e:
            _report(self, wm, "ERROR", str(e))
            return {"CANCELLED"}
        _report(self, wm, "INFO", text)
        return {"FINISHED"}


_answers: dict = {}


def animated(url: str, token: str, path: str, fps: int):
    """The server's curves for the file, asked once per (server, token, file and its
    modification time, fps): changing an option in the redo panel re-imports without sending
    the file again."""
    key = (url, token, path, os.path.getmtime(path) if os.path.isfile(path) else None, fps)
    if key not in _answers:
        _answers.clear()
        _answers[key] = animate_file(url, token, path, fps)
    return _answers[key]


class BLENDSYNC_OT_animate_audio(bpy.types.Operator, ImportSettings):
    """Send a sound file to a running bstrain serve and put the curves it answers on the shape keys"""

    bl_idname = "blendsync.animate_audio"
    bl_label = "Animate from audio (bstrain serve)"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Audio", subtype="FILE_PATH")
    server_url: StringProperty(name="Server", default="", description="Empty: the add-on preferences' server")
    token: StringProperty(name="Token", default="", subtype="PASSWORD", options={"HIDDEN", "SKIP_SAVE"})
    fps: EnumProperty(name="Curves fps", items=[("60", "60", ""), ("30", "30", "")], default="60")
    add_audio: BoolProperty(name="Add audio", default=True)

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        wm = context.window_manager
        path = bpy.path.abspath(self.filepath)
        try:
            options = self.import_options(path if self.add_audio else "")
            shape_key_owner(context.active_object)  # before the server's work, not after
            url, token = server_and_token(self, context)
            curves = animated(url, token, path, int(self.fps))
            text = import_curves(context.scene, context.active_object, curves, options)
        except CurveFileError as e:
            _report(self, wm, "ERROR", str(e))
            return {"CANCELLED"}
        _report(self, wm, "INFO", text)
        return {"FINISHED"}


SOURCES = [
    ("SERVER", "bstrain serve", "Stream a WAV file through a running server's /v1/stream"),
    ("LIVELINK", "Live Link Face", "Listen for Live Link Face UDP packets (the iPhone app, bstrain stream --to)"),
]


class BLENDSYNC_OT_live_start(bpy.types.Operator):
    """Drive the shape keys live: a sound file streamed through a running bstrain serve, or Live Link Face packets"""

    bl_idname = "blendsync.live_start"
    bl_label = "Start live session"

    source: EnumProperty(name="Source", items=SOURCES, default="SERVER")
    port: IntProperty(name="UDP port", default=11111, min=1, max=65535, description="Live Link Face packets' port")
    listen_host: StringProperty(
        name="Listen on",
        default="0.0.0.0",
        description="Address to receive on (0.0.0.0: every network, as the app sends from a phone)",
    )
    subject: StringProperty(name="Subject", default="", description="Only packets of this subject (empty: any)")

    filepath: StringProperty(name="Audio (16-bit WAV)", subtype="FILE_PATH")
    server_url: StringProperty(name="Server", default="", description="Empty: the add-on preferences' server")
    token: StringProperty(name="Token", default="", subtype="PASSWORD", options={"HIDDEN", "SKIP_SAVE"})
    fps: IntProperty(name="Frames per second", default=60, min=1, max=240)
    record: BoolProperty(
        name="Record keyframes", default=False, description="Every frame also keyed at start frame + its time"
    )
    start_frame: IntProperty(name="Start frame", default=1)
    gain: FloatProperty(name="Gain", default=1.0, min=0.0, max=10.0)
    name_map: EnumProperty(name="Name map", items=MAPS, default="arkit")
    name_map_file: StringProperty(name="Name map file", default="", subtype="FILE_PATH")

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self, width=420)

    def execute(self, context):
        wm = context.window_manager
        try:
            text = live_driver.start(context, self, *server_and_token(self, context))
        except CurveFileError as e:
            _report(self, wm, "ERROR", str(e))
            return {"CANCELLED"}
        _report(self, wm, "INFO", text)
        return {"FINISHED"}


class BLENDSYNC_OT_live_stop(bpy.types.Operator):
    """Stop the live session (the end message, the connection closed, keys kept)"""

    bl_idname = "blendsync.live_stop"
    bl_label = "Stop live session"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        _report(self, context.window_manager, "INFO", live_driver.stop())
        return {"FINISHED"}


class BLENDSYNC_PT_panel(bpy.types.Panel):
    bl_label = "blendsync"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "blendsync"

    def draw(self, context):
        col = self.layout.column()
        col.operator(BLENDSYNC_OT_import_curves.bl_idname, text="Import curves...")
        col.operator(BLENDSYNC_OT_animate_audio.bl_idname, text="Animate from audio...")
        if live_driver.active():
            col.operator(BLENDSYNC_OT_live_stop.bl_idname)
        else:
            col.operator(BLENDSYNC_OT_live_start.bl_idname)
        col.label(text=live_driver.status())
        col.label(text=context.window_manager.get("blendsync_report", ""))


def menu_import(self, context):
    self.layout.operator(BLENDSYNC_OT_import_curves.bl_idname, text="blendsync curves (.csv, .json, .npy)")


CLASSES = (
    BlendsyncPreferences,
    BLENDSYNC_OT_import_curves,
    BLENDSYNC_OT_animate_audio,
    BLENDSYNC_OT_live_start,
    BLENDSYNC_OT_live_stop,
    BLENDSYNC_PT_panel,
)


def register() -> None:
    for c in CLASSES:
        bpy.utils.register_class(c)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)
    bpy.app.handlers.load_pre.append(live_driver.stop_on_load)


def unregister() -> None:
    live_driver.stop()
    if live_driver.stop_on_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(live_driver.stop_on_load)
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
    for c in reversed(CLASSES):
        bpy.utils.unregister_class(c)
