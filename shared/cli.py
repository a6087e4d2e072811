"""What both CLIs share: exit code 1 for unusable arguments (click's own usage errors
included, since bsfeat gives 2 the meaning "some rows failed") and logging set up once."""

from __future__ import annotations

import errno
import logging
import sys
from contextlib import contextmanager

import click

from blendsync.shared.files import write_atomically

EXIT_OK, EXIT_USAGE = 0, 1
# Ctrl-C: the shell's convention for a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


class UsageFailure(click.ClickException):
    exit_code = EXIT_USAGE


# Write failures that are the destination's fault, said in one line instead of a traceback.
WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def is_write_failure(e: OSError) -> bool:
    return e.errno in WRITE_ERRNOS


def write_failure(e: OSError) -> UsageFailure:
    where = e.filename or "the output"
    return UsageFailure(f"cannot write {where}: {e.strerror or e}")


@contextmanager
def reported_errors():
    """A command's failures as one line and exit 1: bad input (ValueError and its kinds:
    config, checkpoint, data, audio errors) and outputs that cannot be written."""
    try:
        yield
    except ValueError as e:
        raise UsageFailure(str(e)) from None
    except OSError as e:
        if is_write_failure(e):
            raise write_failure(e) from None
        raise


def setup_logging(verbose: int, quiet: bool, noisy: tuple[str, ...] = ()) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    for name in (
        "distributed",
        "bokeh",
        "tornado",
        "numba",
        "asyncio",
        "matplotlib",
        "PIL",
        "botocore",
        "aiobotocore",
        "s3fs",
        "fsspec",
        "urllib3",
        *noisy,
    ):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def run_cli(group: click.Group, prog_name: str, argv: list[str] | None = None) -> None:
    try:
        rv = group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__ or e.__context__, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        click.echo("aborted", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USAGE)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)


def write_text_or_stdout(text: str, path) -> None:
    """write-default-config: to PATH, or to stdout when none is given."""
    if path is None:
        click.echo(text, nl=False)
    else:
        write_atomically(path, text)
        click.echo(f"wrote {path}", err=True)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that refuses nan and infinities (which pass its comparisons)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        import math

        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


# Options both CLIs use, declared once.
def verbosity_options(verbose_help: str = "More log output."):
    """-v / -q on a command group: the log level of every command under it."""

    def add(f):
        f = click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")(f)
        return click.option("-v", "--verbose", count=True, help=verbose_help)(f)

    return add


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON).")
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Progress bar [default: on when stderr is a terminal]."
)


def config_file_option(what: str, see: str):
    """--config FILE: a YAML/JSON config of the command's kind."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help=f"{what} (YAML/JSON): every key is optional; {see} writes them all with their descriptions.",
    )


def progress_enabled(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


GROUP_SETTINGS = dict(show_default=True, help_option_names=["-h", "--help"])
