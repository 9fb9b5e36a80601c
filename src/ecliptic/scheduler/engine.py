"""The reservation engine: capacity timelines of every host, and the questions asked of them.

CONTRACT (the services layer is written against these signatures; keep them):

    engine = Engine(hosts, min_preemptible_lifetime=timedelta(hours=1))
    engine.set_host(host_info)                  # add or replace a host (inventory sync, down/up)
    engine.fit(lease_id, requests, start, end) -> Placement | NoFit
    engine.earliest(requests, duration, not_before, horizon, alternatives=3) -> list[Window]
    engine.book(lease_id, placement)            # record a placement (after fit/earliest)
    engine.release(lease_id)                    # forget a lease's placement
    engine.booking(lease_id) -> Placement | None
    engine.calendar(start, end, bucket) -> list[CalendarRow]
    engine.add_preemptible(p) / engine.remove_preemptible(server_id)
    engine.free_now(host, at) -> Amount         # room nobody reserved at instant ``at``
    engine.victims(placement, at) -> list[str]  # preemptible server ids to stop for it
    engine.snapshot() -> dict                   # canonical state, for rebuild-equality tests

``fit`` with a ``lease_id`` that is already booked places the lease as if its own booking
were absent (that is how an update re-places a lease). Preemptible servers never block a
reservation once their minimum lifetime has passed; before it, ``fit`` answers ``NoFit``
with ``earliest_start`` set. Placement is best-fit (the host that leaves the least
stranded room), so large requests still find whole hosts later.
"""

from __future__ import annotations
