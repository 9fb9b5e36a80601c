"""The ``ecliptic`` command line: Typer commands over ``ecliptic.client``, one file per area."""
