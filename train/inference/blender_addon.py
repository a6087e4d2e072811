"""The Blender add-on (integrations/blender/blendsync_blender, installed with the package as
blendsync.blender_addon) packed as the zip Blender's Preferences > Add-ons > Install takes:
one folder, blendsync_blender/, holding its modules. The zip is the same bytes for the same
sources and zlib (sorted names, fixed timestamps and system), so a release can be checked
against a build."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

from blendsync.shared.files import write_atomically

ADDON_FOLDER = "blendsync_blender"
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def addon_sources() -> Path:
    """The add-on's folder, found without importing it (its modules import bpy)."""
    spec = importlib.util.find_spec("blendsync.blender_addon")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Blender add-on is not installed with this blendsync (blendsync.blender_addon)")
    return Path(next(iter(spec.submodule_search_locations)))


def pack_addon(out: Path) -> list[str]:
    """Writes the add-on zip to out (whole or not at all); returns the names it holds."""
    import io

    src = addon_sources()
    files = sorted(p for p in src.glob("*.py"))
    if not any(p.name == "__init__.py" for p in files):
        raise FileNotFoundError(f"{src}: no __init__.py: not the add-on's folder")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in files:
            info = zipfile.ZipInfo(f"{ADDON_FOLDER}/{p.name}", FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix, on every system that packs it
            z.writestr(info, p.read_bytes())
    write_atomically(Path(out), buf.getvalue())
    return [f"{ADDON_FOLDER}/{p.name}" for p in files]
