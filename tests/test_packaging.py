"""The distribution: entry points, the namespace mapping and the image's copy list agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_entry_points_and_namespace_mapping():
    py = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert set(py["project"]["scripts"]) == {"bsfeat", "bstrain"}
    mapping = py["tool"]["setuptools"]["package-dir"]
    assert mapping == {
        "blendsync": "blendsync",
        "blendsync.shared": "shared",
        "blendsync.featurize": "featurize",
        "blendsync.train": "train",
        "blendsync.blender_addon": "integrations/blender/blendsync_blender",
    }
    for folder in mapping.values():
        assert (REPO / folder / "__init__.py").is_file()


def test_cpu_image_copies_every_package_folder():
    py = tomllib.loads((REPO / "pyproject.toml").read_text())
    text = (REPO / "docker" / "Dockerfile.cpu").read_text()
    copied = set(re.findall(r"^COPY (\S+) ", text, flags=re.M))
    assert set(py["tool"]["setuptools"]["package-dir"].values()) <= copied
    assert "README.md" in text  # pyproject's readme, needed to build


def test_bsfeat_help_lists_every_command():
    from click.testing import CliRunner

    from blendsync.featurize.cli import cli

    out = CliRunner().invoke(cli, ["--help"]).output
    for cmd in ("extract", "info", "verify", "write-default-config"):
        assert cmd in out
    ex = CliRunner().invoke(cli, ["extract", "--help"]).output
    for opt in ("--store", "--workers", "--scheduler", "--config", "--force"):
        assert opt in ex


def test_license_is_an_spdx_string_that_setuptools_takes_without_a_warning():
    # A TOML table (license = {text = ...}) made every install print a deprecation warning.
    py = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert py["project"]["license"] == "MIT"
    req = next(r for r in py["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(req.split(">=")[1].split(".")[0]) >= 77  # SPDX license strings
    assert 'PYTHONWARNINGS="ignore:Editable installation"' in (REPO / "scripts" / "install.sh").read_text()


def test_the_wheel_builds_without_a_warning_and_holds_the_live_page(tmp_path):
    """Every install built the package; a folder of data files not declared made setuptools
    print a 40-line warning each time ("... is absent from the packages configuration")."""
    import shutil
    import subprocess
    import sys
    import zipfile

    had_build = (REPO / "build").exists()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
            capture_output=True,
            text=True,
        )
    finally:
        if not had_build:  # setuptools builds in the source tree: leave the clone as it was
            shutil.rmtree(REPO / "build", ignore_errors=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "absent from the" not in out and "SetuptoolsDeprecationWarning" not in out, out
    (wheel,) = tmp_path.glob("blendsync-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"blendsync/train/serve/page/{f}" for f in ("index.html", "face.js", "worklet.js")} <= names
    # bstrain blender-addon packs these from an installed wheel too
    addon = {p.name for p in (REPO / "integrations" / "blender" / "blendsync_blender").glob("*.py")}
    assert {f"blendsync/blender_addon/{f}" for f in addon} <= names and "__init__.py" in addon
