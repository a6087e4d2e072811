"""blendsync for Blender: curves from blendsync (or the Live Link Face app) on shape keys,
from files, from a running `bstrain serve`, or live. Pure Python: Blender's own interpreter
runs it with nothing installed."""

bl_info = {
    "name": "blendsync",
    "author": "blendsync",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "File > Import > blendsync curves; 3D Viewport > Sidebar > blendsync",
    "description": "Speech-driven face curves (ARKit or a custom rig) onto shape keys: files, a server, live",
    "category": "Import-Export",
}


def register():
    import bpy

    if bpy.app.version >= (5, 0, 0):  # actions and the sequencer's strips changed their Python API
        raise RuntimeError("blendsync: this add-on is for Blender 3.4 to 4.x")
    from . import operators

    operators.register()


def unregister():
    from . import operators

    operators.unregister()
