"""The docs tell the truth a newcomer tests: the site builds with every link and anchor in
place, every option is documented (once, in the generated reference), the commands the pages
show use options that exist, and the own-actor recipes run as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.helpers import REPO

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [REPO / "README.md"]
BIN = Path(sys.executable).parent
# Pages whose Python talks to a running bstrain serve: tests/train/serve/test_serving_docs.py
# runs it against one.
NEEDS_A_SERVER = {"serving.md"}
# Pages whose Python runs inside Blender (bpy): tests/train/inference/test_blender_addon.py
# runs it there.
NEEDS_BLENDER = {"blender.md"}


def _programs() -> dict[str, click.Group]:
    from blendsync.featurize.cli import cli as bsfeat
    from blendsync.train.cli import cli as bstrain

    return {"bsfeat": bsfeat, "bstrain": bstrain}


def test_readme_is_read_in_five_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def test_the_site_builds_strict(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    for needle in ("bsfeat extract", "bstrain fit", "--frames-per-window", "--set"):  # generated, not empty
        assert needle in cli
    config = (tmp_path / "site" / "configuration" / "index.html").read_text()
    assert "optim.lr" in config and "emotion.context_s" in config and "<!-- settings" not in config
    assert "Frame blocks: training throughput" in (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    # Read offline: every script, stylesheet, font and image the pages load is the site's own.
    loaded = {
        f"{page.relative_to(tmp_path)}: {url}"
        for page in (tmp_path / "site").rglob("*.html")
        for url in re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"]+)"', page.read_text())
        if re.match(r"(https?:)?//", url)
    }
    assert loaded == set()
    assert ".codehilite" in (tmp_path / "site" / "css" / "pygments.css").read_text()
    assert '<div class="codehilite">' in (tmp_path / "site" / "serving" / "index.html").read_text()


def test_every_option_of_every_command_has_its_help():
    missing = [
        f"{prog} {name} {param.opts[0]}"
        for prog, group in _programs().items()
        for name, cmd in group.commands.items()
        for param in cmd.params
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert missing == []


def _fenced(text: str, languages: tuple[str, ...] = ("bash", "sh", "console", "")) -> list[str]:
    """The bodies of a page's fenced code blocks in these languages."""
    blocks, body, lang = [], None, ""
    for line in text.splitlines():
        fence = re.match(r"\s*```(\w*)\s*$", line)
        if fence and body is None:
            body, lang = [], fence.group(1)
        elif fence:
            if lang in languages:
                blocks.append("\n".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def _commands(text: str) -> list[str]:
    """Every bsfeat/bstrain command line in the shell blocks of a page, continuations joined."""
    out = []
    for block in _fenced(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^\s*(\.venv/bin/)?", "", line.split(" #")[0])
            if line.startswith(("bsfeat ", "bstrain ")):
                out.append(line)
    return out


def test_commands_on_the_pages_use_options_that_exist():
    programs, bad, seen = _programs(), [], 0
    for page in PAGES:
        for line in _commands(page.read_text()):
            words = shlex.split(line)
            group = programs[words[0]]
            i = 1
            while i < len(words) and words[i].startswith("-"):  # -v / -q before the command
                i += 1
            cmd = group.commands.get(words[i]) if i < len(words) else None
            if cmd is None:
                bad.append(f"{page.name}: {line}: no such command")
                continue
            seen += 1
            known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
            known |= {o for p in group.params for o in (*p.opts, *p.secondary_opts)}
            for w in words[i + 1 :]:
                if w.startswith("-") and w.split("=")[0] not in known:
                    bad.append(f"{page.name}: {line}: {words[0]} {words[i]} has no option {w}")
            problem = _parse_problem(cmd, _expanded(words[i + 1 :]))
            if problem:
                bad.append(f"{page.name}: {line}: {problem}")
    assert bad == [] and seen >= 20


def _expanded(words: list[str]) -> list[str]:
    """Words as a shell in the repository expands them (a glob that matches there)."""
    import glob

    out = []
    for w in words:
        matches = sorted(glob.glob(w, root_dir=REPO)) if any(c in w for c in "*?[") else []
        out += matches or [w]
    return out


def _parse_problem(cmd: click.Command, args: list[str]) -> str | None:
    """What click would refuse in these arguments (an option without its value, arguments the
    command does not take), without running the command nor checking the files named."""
    args = [a for a in args if a not in ("-h", "--help")]
    try:
        _, extra, _ = cmd.make_parser(click.Context(cmd)).parse_args(args)
    except click.UsageError as e:
        return e.format_message()
    return f"unexpected extra argument(s) {extra}" if extra else None


def test_pages_hold_no_copied_usage_synopses():
    """Options are documented once, in the reference generated from the commands; a page that
    copies a synopsis ([--option VALUE]) goes stale with the next option."""
    synopses = [
        f"{p.name}: {line.strip()}"
        for p in PAGES
        for line in p.read_text().splitlines()
        if re.match(r"\s*(bsfeat|bstrain) [a-z-]+ .*\[--", line)
    ]
    assert synopses == []


# -- the own-actor recipes, run as written -------------------------------------------------------
def _recipe(page: Path, name: str) -> tuple[dict[str, str], list[str]]:
    """(the files the page gives: name -> text, the recipe's command lines)."""
    text = page.read_text()
    files = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S))
    block = re.search(rf"<!-- recipe: {name} -->\n```bash\n(.*?)```", text, flags=re.S)
    assert block, f"{page.name} has no recipe {name}"
    return files, _commands(block.group(0))


def _run_recipe(tmp_path: Path, name: str, takes: dict[str, Path], page: Path = DOCS / "own-actor.md") -> list[str]:
    files, lines = _recipe(page, name)
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    for fname, src in takes.items():
        (tmp_path / fname).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / fname).symlink_to(src)
    outputs = []
    for line in lines:
        words = shlex.split(line)
        if words[:2] == ["bstrain", "fit"]:
            words += ["--max-steps", "3"]  # the recipe's epochs, cut short: this checks the steps, not the model
        if words[:2] == ["bstrain", "stream"]:
            words += ["--no-realtime"]  # as fast as computed: real time would only take longer
        r = subprocess.run([str(BIN / words[0]), *words[1:]], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
        outputs.append(r.stdout)
    return outputs


@pytest.mark.slow
def test_the_arkit_recipe_runs_as_written(tmp_path):
    ex = REPO / "data" / "example"
    takes = {
        f"takes/take0{i}.{ext}": ex / f"{src}.{ext}"
        for i, src in enumerate(("ava_take1", "ava_take2", "ava_take3", "chen_take1"), 1)
        for ext in ("wav", "csv")
    }
    out = _run_recipe(tmp_path, "arkit", takes)
    assert "4/4 rows stored" in "".join(out)
    assert (tmp_path / "runs/my_actor/checkpoints/best.pt").is_file()
    assert (tmp_path / "predictions/take04.csv").read_text().startswith("Timecode,BlendshapeCount,EyeBlinkLeft")


@pytest.mark.slow
def test_the_custom_rig_recipe_runs_as_written(tmp_path, shared_data):
    import numpy as np

    rig = shared_data / "custom_rig"
    takes = {
        f"takes/{f}": rig / f
        for f in ("1114_3_15.wav", "1114_3_16.wav", "bs_value_1114_3_15.npy", "bs_value_1114_3_16.npy")
    }
    (tmp_path / "channel_names.txt").symlink_to(rig / "channel_names.txt")
    out = _run_recipe(tmp_path, "custom-rig", takes)
    assert "2/2 rows stored" in out[0]
    # The sync check read the channel the recipe names: an estimate for both takes (without it: "no estimate").
    assert out[1].count("lag +0 frames") == 2 and "no estimate" not in out[1]
    curves = np.load(tmp_path / "predictions/1114_3_16.npy")
    assert curves.shape[1] == 116 and curves.dtype == np.float32


def test_the_python_on_the_pages_runs(example_store, tmp_path, monkeypatch):
    """Code a reader copies from the pages runs as shown, next to the quickstart's store."""
    (tmp_path / "features.zarr").symlink_to(example_store)
    monkeypatch.chdir(tmp_path)
    ran = 0
    for page in PAGES:
        if page.name in NEEDS_A_SERVER | NEEDS_BLENDER:
            continue
        for block in _fenced(page.read_text(), languages=("python",)):
            exec(compile(block, f"{page.name}:python", "exec"), {})
            ran += 1
    assert ran >= 1


@pytest.mark.slow
def test_the_live_recipe_runs_as_written(tmp_path):
    """The ARKit takes, featurized live, a live model, and a stream of it (sent as fast as it
    is computed here: the recipe's real time would only take longer)."""
    ex = REPO / "data" / "example"
    takes = {f"takes/take0{i}.{ext}": ex / f"{src}.{ext}" for i, src in
             enumerate(("ava_take1", "ava_take2", "ava_take3", "chen_take1"), 1) for ext in ("wav", "csv")}  # fmt: skip
    out = _run_recipe(tmp_path, "live", takes)
    assert "at 30 fps" in out[-1] and (tmp_path / "runs/my_actor_live/checkpoints/best.pt").is_file()


@pytest.mark.slow
def test_the_readme_live_section_runs_as_written(tmp_path):
    """From the repository's root, on the example data, as a newcomer runs it after the
    quickstart (its training cut short, its stream as fast as computed)."""
    given = {"data_manifest.csv": REPO / "data_manifest.csv", "data": REPO / "data"}
    out = _run_recipe(tmp_path, "readme-live", given, page=REPO / "README.md")
    assert "rows stored" in out[0] and (tmp_path / "runs/live/checkpoints/best.pt").is_file()
    assert "sent " in out[-1] and "at 30 fps" in out[-1]


def test_what_the_readme_s_commands_write_is_ignored_by_git():
    """The quickstart's store and runs, predict's default folder: a newcomer's `git status`
    stays clean after following the README."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    written = [
        "features.zarr/zarr.json",
        "runs/example/config.json",
        "predictions/chen_take1.csv",
        "site/index.html",
        "sweeps/s/sweep.json",
    ]
    r = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=REPO, capture_output=True, text=True)
    assert sorted(r.stdout.split()) == sorted(written), r.stdout + r.stderr


def test_the_readme_says_what_the_tests_need_beside_the_test_command():
    text = (REPO / "README.md").read_text()
    start = text.index("bash scripts/test.sh")
    near = text[start : start + 800]
    for need in ("apt-get install chromium", "g++", "docker-compose", "apt-get install blender"):
        assert need in near
