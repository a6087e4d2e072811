"""bstrain serve: the animation server (blendsync.train.serve)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import click

from blendsync.shared.cli import FiniteFloatRange, UsageFailure, reported_errors
from blendsync.train.cli.options import checkpoint_option, device_option

TOKEN_ENV = "BLENDSYNC_TOKEN"


@click.command()
@checkpoint_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. 127.0.0.1 serves this machine only; 0.0.0.0 serves every network "
              "this machine is on and then needs --token.")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--token", envvar=TOKEN_ENV, default=None, show_envvar=True,
              help="Bearer token every request must carry (Authorization: Bearer TOKEN, or ?token=TOKEN); "
              "required when --host is not a loopback address.")  # fmt: skip
@click.option("--max-upload-mb", type=FiniteFloatRange(min=0.01), default=100.0, show_default=True,
              help="Largest audio file POST /v1/animate takes.")  # fmt: skip
@click.option("--max-audio-s", type=FiniteFloatRange(min=1.0), default=1800.0, show_default=True,
              help="Longest audio POST /v1/animate takes, in seconds (read from the file's header before any "
              "decoding); uploads must also be at 8000 to 192000 Hz.")  # fmt: skip
@click.option("--allow-livelink", default="", metavar="HOST,...",
              help="Hosts off this machine a session's start message may forward Live Link packets to (by name "
              "or address, comma-separated) [default: this machine only].")  # fmt: skip
@click.option("--max-sessions", type=click.IntRange(1, 10000), default=64, show_default=True,
              help="WebSocket sessions at once; more are closed with code 1013 (try again later).")  # fmt: skip
@device_option("cpu")
def serve(checkpoint, host, port, token, max_upload_mb, max_audio_s, allow_livelink, max_sessions, device):
    """Serve a model over HTTP and WebSocket until Ctrl-C: POST /v1/animate (an audio file ->
    predict's curves), WebSocket /v1/stream (PCM in, frames out as they are computed),
    GET /v1/model, GET /healthz, and a live page at / (docs/serving.md)."""
    from blendsync.train.serve.app import ServerConfig, run_server

    if token is not None:
        token = token.strip()  # a client's "Bearer TOKEN" is read without its spaces: so is the token
        if not token:
            raise UsageFailure("--token must not be blank: give the bearer token clients will send")
    if not _loopback(host) and not token:
        raise UsageFailure(
            f"--host {host} serves other machines: give a bearer token with --token or ${TOKEN_ENV} "
            "(every client then sends Authorization: Bearer TOKEN)"
        )
    if not _loopback(host):
        click.echo(f"warning: serving on {host}: anyone who can reach this port and has the token can use it", err=True)
    config = ServerConfig(checkpoint=str(checkpoint), device=device, token=token, max_upload_mb=max_upload_mb,
                          max_audio_s=max_audio_s, max_sessions=max_sessions,
                          allow_livelink=tuple(h.strip() for h in allow_livelink.split(",") if h.strip()))  # fmt: skip

    def ready() -> None:
        click.echo(f"serving {checkpoint} on http://{_url_host(host)}:{port} (page /, WebSocket /v1/stream)", err=True)

    with reported_errors():
        run_server(config, host, port, on_ready=ready)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@click.command("blender-addon")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("blendsync_blender.zip"),
    show_default=True,
    help="The zip to write (Blender: Edit > Preferences > Add-ons > Install).",
)
def blender_addon(out):
    """Pack the Blender add-on (curves on shape keys: files, this server's /v1/animate, live
    sessions; docs/blender.md) into the zip Blender installs."""
    from blendsync.train.inference.blender_addon import pack_addon

    with reported_errors():
        names = pack_addon(out)
    click.echo(f"wrote {out} ({len(names)} files); install it in Blender 3.4 or later and enable 'blendsync'")
