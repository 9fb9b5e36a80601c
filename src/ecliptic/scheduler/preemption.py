"""Preemptible servers: the room they backfill, and who makes way for a booking."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ecliptic.scheduler.core import EngineCore, add_into, sub_from, to_minutes, within, zip3
from ecliptic.scheduler.model import (
    Amount,
    Placement,
    Preemptible,
)
from ecliptic.scheduler.resources import (
    OCC,
    WHOLE,
    free_amount,
    holding_vector,
    needs_pinning,
    pin_gpus,
)


class Preempting(EngineCore):
    """Preemptible servers on the hosts, and the victims a booking needs."""

    def add_preemptible(self, p: Preemptible) -> None:
        """Record a running preemptible server (GPUs it does not place are put on GPUs free
        for its whole minimum lifetime, when there are such)."""
        h = self._host_id(p.host)
        if p.server_id in self._pre:
            self.remove_preemptible(p.server_id)
        shape = self._shape[h]
        if needs_pinning(p.amount):
            # GPUs free for the whole minimum lifetime, as backfill_room counts them.
            t = to_minutes(p.started_at)
            used = list(self._tl[h].peak(t, t + max(1, self._min_life)))
            for sid in self._pre_on.get(h, ()):
                for i, v in enumerate(self._pre_vec[sid]):
                    used[i] += v
            free = [c - u for c, u in zip(shape.cap, used, strict=True)]
            p = replace(p, amount=replace(p.amount, gpu_units=pin_gpus(shape, free, p.amount)))
        self._pre[p.server_id] = p
        self._pre_vec[p.server_id] = holding_vector(shape, p.amount)
        self._pre_on.setdefault(h, set()).add(p.server_id)

    def remove_preemptible(self, server_id: str) -> None:
        """Forget a preemptible server (nothing happens for an unknown id)."""
        p = self._pre.pop(server_id, None)
        if p is None:
            return
        del self._pre_vec[server_id]
        h = self._ids[p.host]
        on = self._pre_on[h]
        on.discard(server_id)
        if not on:
            del self._pre_on[h]

    def preemptible(self, server_id: str) -> Preemptible | None:
        """One preemptible server as recorded (its GPUs pinned), if any."""
        return self._pre.get(server_id)

    def preemptibles(self) -> list[Preemptible]:
        """Every preemptible server recorded, by server id."""
        return [self._pre[k] for k in sorted(self._pre)]

    def free_now(self, host: str, at: datetime) -> Amount:
        """Room nobody reserved on ``host`` at instant ``at`` (nothing on a down host).

        ``whole_host`` is True when a whole-host reservation holds the host then (so there
        is no room at all). Preemptible servers are not subtracted: they run on this room.
        """
        h = self._host_id(host)
        if not self._up[h]:
            return Amount()
        return free_amount(self._shape[h], self._tl[h].at(to_minutes(at)))

    def backfill_room(self, host: str, at: datetime) -> Amount:
        """Room a new preemptible may take on ``host`` at ``at`` and keep for its minimum
        lifetime: capacity minus reservations over that lifetime minus running preemptibles
        (none on a host that is down or serves bare metal only)."""
        h = self._host_id(host)
        if not self._takes_slots[h]:
            return Amount()
        t = to_minutes(at)
        used = list(self._tl[h].peak(t, t + max(1, self._min_life)))
        for sid in self._pre_on.get(h, ()):
            for i, v in enumerate(self._pre_vec[sid]):
                used[i] += v
        if used[OCC] >= WHOLE:
            return Amount()
        return free_amount(self._shape[h], tuple(used))

    def victims(self, placement: Placement, at: datetime) -> list[str]:
        """Preemptible servers to stop so ``placement`` has its room at ``at``: on each host the
        fewest needed, youngest first (least work lost), never one inside its minimum lifetime."""
        t = to_minutes(at)
        booked = self._is_booked(placement)
        extra: dict[int, list[int]] = {}
        for alloc in placement.allocations:
            h = self._host_id(alloc.host)
            if booked or h not in self._pre_on:
                extra.setdefault(h, [0] * len(self._shape[h].cap))
                continue
            shape = self._shape[h]
            amount = alloc.amount
            acc = extra.setdefault(h, [0] * len(shape.cap))
            if needs_pinning(amount):
                free = [c - u - x for c, u, x in zip3(shape.cap, self._tl[h].at(t), acc)]
                amount = replace(amount, gpu_units=pin_gpus(shape, free, amount))
            for i, v in enumerate(holding_vector(shape, amount)):
                acc[i] += v
        out: list[str] = []
        for h, add in sorted(extra.items()):
            running = sorted(self._pre_on.get(h, ()))
            if not running:
                continue
            cap = self._shape[h].cap
            total = [u + x for u, x in zip(self._tl[h].at(t), add, strict=True)]
            for sid in running:
                for i, v in enumerate(self._pre_vec[sid]):
                    total[i] += v
            if within(total, cap):
                continue
            evictable = [
                sid
                for sid in running
                if to_minutes(self._pre[sid].started_at) + self._min_life <= t
            ]
            evictable.sort(key=lambda sid: (-to_minutes(self._pre[sid].started_at), sid))
            chosen: list[str] = []
            for sid in evictable:
                chosen.append(sid)
                sub_from(total, self._pre_vec[sid])
                if within(total, cap):
                    break
            # Keep running any victim (oldest first) the room turns out not to need.
            for sid in sorted(chosen, key=lambda x: (to_minutes(self._pre[x].started_at), x)):
                vec = self._pre_vec[sid]
                if within([a + b for a, b in zip(total, vec, strict=True)], cap):
                    add_into(total, vec)
                    chosen.remove(sid)
            out.extend(chosen)
        return out

    def _is_booked(self, placement: Placement) -> bool:
        if not placement.allocations:
            return False
        h = self._ids.get(placement.allocations[0].host)
        if h is None:
            return False
        return any(self._leases[lid] == placement for lid in self._host_leases[h])
