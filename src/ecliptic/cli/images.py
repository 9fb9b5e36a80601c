"""``ecliptic image``: the images servers boot from (list, show, build, log, delete)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from ecliptic.cli import output
from ecliptic.cli.exitcodes import ExitCode
from ecliptic.cli.session import client, command, emit
from ecliptic.client import ApiError, ImageOut

app = typer.Typer(help="Images: what servers boot from, built from recipes.")

Name = Annotated[str, typer.Argument(help="Image name (ecliptic image list).", show_default=False)]


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{n // 1024} KiB"


def show_image(img: ImageOut) -> None:
    """An image's fields, for people."""
    output.fields(
        [
            ("name", img.name),
            ("version", img.version),
            ("status", img.status),
            ("description", img.description),
            ("built on", img.parent or "the host's Debian system"),
            ("hash", img.hash),
            ("size", _size(img.size_bytes) if img.status == "built" else ""),
            ("built", img.built_at or ""),
            ("build time", f"{img.build_seconds:.1f} s" if img.build_seconds else ""),
            ("recipe", img.source),
            ("detail", img.detail),
        ]
    )


@command(app, "list")
def image_list() -> None:
    """List images, built or not."""
    imgs = client().images.list()
    emit(
        imgs,
        lambda: output.table(
            ["NAME", "VERSION", "STATUS", "SIZE", "DESCRIPTION"],
            [
                [
                    i.name,
                    i.version,
                    i.status,
                    _size(i.size_bytes) if i.status == "built" else "",
                    i.description,
                ]
                for i in imgs
            ],
            empty="no images",
        ),
    )


@command(app, "show")
def image_show(name: Name) -> None:
    """Show an image."""
    img = client().images.get(name)
    emit(img, lambda: show_image(img))


@command(app, "log")
def image_log(name: Name) -> None:
    """Print the log of an image's build (in progress, last failed, or last)."""
    text = client().images.log(name)
    emit({"name": name, "log": text}, lambda: output.stdout().out(text, end="", highlight=False))


@command(app, "build")
def image_build(
    name: Name,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the build, showing its steps.")
    ] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 3600,
) -> None:
    """Build an image (administrators); a cached build returns at once."""
    c = client()
    img = c.images.build(name)
    if wait and img.status != "built":
        deadline = time.monotonic() + timeout
        seen = 0
        with output.waiting(f"building image {name}") as update:
            while img.status in ("building", "not built", "outdated"):
                if time.monotonic() > deadline:
                    raise ApiError(0, "timeout", f"image {name} is still building")
                time.sleep(0.5)
                steps = [ln[2:] for ln in c.images.log(name).splitlines() if ln.startswith("$ ")]
                for i, step in enumerate(steps[seen:], seen + 1):
                    line = f"image {name}: step {i}: {step[:100]}"
                    update(line)
                    if not sys.stderr.isatty():
                        output.note(line)
                seen = max(seen, len(steps))
                img = c.images.get(name)
        if img.status == "failed":
            emit(img, lambda: show_image(img))
            output.note(f"the build failed: see `ecliptic image log {name}`")
            raise typer.Exit(ExitCode.WAIT_FAILED)
    emit(img, lambda: show_image(img))


@command(app, "delete")
def image_delete(name: Name) -> None:
    """Remove an image's built layers (administrators); refused while servers use it."""
    client().images.delete(name)
    output.say(f"image {name}: deleted")
