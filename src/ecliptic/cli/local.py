"""``ecliptic local``: what the backend really holds, and removing what nobody owns."""

from __future__ import annotations

import typer
from rich.text import Text

from ecliptic.cli import output
from ecliptic.cli.session import client, command, emit
from ecliptic.client import BackendStatus

app = typer.Typer(help="The backend's real resources (administrators).")

COLUMNS = ["KIND", "NAME", "OBJECT", "DETAIL", "OWNED"]


@command(app, "status")
def status() -> None:
    """List what the backend holds for this instance; orphans are highlighted."""
    st: BackendStatus = client().backend_status()

    def human() -> None:
        output.table(
            COLUMNS,
            [
                [
                    r.kind,
                    r.name,
                    r.object_id,
                    r.detail,
                    Text("yes") if r.known else Text("ORPHAN", style="bold red"),
                ]
                for r in st.resources
            ],
            title=f"{st.backend} backend",
            empty=f"the {st.backend} backend holds nothing",
        )
        if st.orphans:
            output.note(f"{st.orphans} orphan(s): remove them with 'ecliptic local gc'")

    emit(st, human)


@command(app, "gc")
def gc() -> None:
    """Remove what the backend holds for no known object."""
    res = client().backend_gc()
    emit(
        res,
        lambda: output.table(
            COLUMNS[:4],
            [[r.kind, r.name, r.object_id, r.detail] for r in res.removed],
            title="removed",
            empty="nothing to remove",
        ),
    )
