"""Programs that run inside servers for their platforms (the browser terminal, a Slurm
status page), behind the tunnel gateway, which signs people in and decides who may reach
them; they listen on loopback only.

They run from the read-only copy of Ecliptic a server sees at ``/opt/ecliptic`` and import
nothing of the rest of Ecliptic: no store, no services, no API.
"""
