"""Placement: which hosts take a request over a window, best-fit, or why none can.

Whole hosts go to the shape least in demand and the tightest gap in time; slots and
slices pack onto hosts already in use (see :mod:`ecliptic.scheduler.engine`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ecliptic.scheduler.core import (
    EngineCore,
    InvalidRequest,
    copy_timeline,
    from_minutes,
    to_minutes,
    when_text,
    zip3,
)
from ecliptic.scheduler.filters import compile_filter
from ecliptic.scheduler.model import (
    Allocation,
    Amount,
    Blocker,
    FlavorRequest,
    HostRequest,
    NoFit,
    Request,
    SliceRequest,
)
from ecliptic.scheduler.resources import (
    GPU0,
    MEM,
    OCC,
    VCPU,
    WHOLE,
    ProfileError,
    SlotDemand,
    Vector,
    max_slots,
    place_slots,
    profile_units,
    slot_demand,
    whole_host_amount,
)


class Placing(EngineCore):
    """Where requests go over one window (``_place``) and why not (``NoFit``)."""

    def _place(
        self, requests: Sequence[Request], s: int, e: int, *, protect: bool, prefer: set[int]
    ) -> list[Allocation] | NoFit:
        overlay: dict[int, list[int]] = {}
        out: list[Allocation] = []
        for req in sorted(requests, key=_request_order):
            if isinstance(req, HostRequest):
                got = self._place_hosts(req, s, e, protect, overlay, prefer)
            else:
                affinity = req.affinity if isinstance(req, FlavorRequest) else "none"
                got = self._place_slots(
                    req.key,
                    req.filter,
                    slot_demand(req),
                    req.count,
                    affinity,
                    s,
                    e,
                    protect,
                    overlay,
                    prefer,
                )
            if isinstance(got, NoFit):
                return got
            out.extend(got)
        return out

    def _matching(self, text: str) -> list[int]:
        """Hosts matching a filter, smallest first (cached per filter text)."""
        return self._candidates(("match", text))[0]

    def _eligible(self, text: str, demand: SlotDemand) -> tuple[list[int], list[range]]:
        """Hosts matching a filter that have the GPUs a slot needs, smallest first, and the
        runs of hosts of one shape in that list."""
        return self._candidates(
            ("eligible", text, demand.gpus > 0, demand.gpu_model, demand.profile)
        )

    def _candidates(self, key: tuple[Any, ...]) -> tuple[list[int], list[range]]:
        got = self._cache.get(key)
        if got is not None:
            return got
        text = key[1]
        if key[0] == "match":
            flt = compile_filter(text)
            if flt.words is not None:
                index = self._value_index(flt.words[0])
                ids = [h for word in flt.words[1] for h in index.get(word, ())]
            else:
                ids = [h for h in range(len(self._info)) if flt(self._props[h])]
            ids.sort(key=lambda h: (self._size[h], h))
        else:
            _, _, whole_gpus, model, profile = key
            base = self._matching(text)
            if profile:
                ids = [h for h in base if self._shape[h].slice_gpus(profile, model)]
            elif whole_gpus:
                ids = [
                    h
                    for h in base
                    if any(
                        self._shape[h].gpus_of(m)
                        for m in ([model] if model else self._shape[h].models)
                    )
                ]
            else:
                ids = list(base)
        runs: list[range] = []
        lo = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or self._size[ids[i]] != self._size[ids[lo]]:
                runs.append(range(lo, i))
                lo = i
        got = self._cache[key] = (ids, runs)
        return got

    def _value_index(self, name: str) -> dict[str, list[int]]:
        """The hosts of each string value of property ``name``."""
        index = self._by_value.get(name)
        if index is None:
            index = self._by_value[name] = {}
            for h, props in enumerate(self._props):
                v = props.get(name)
                if isinstance(v, str):
                    index.setdefault(v, []).append(h)
        return index

    def _pressure(
        self, cands: list[int], run: range, s: int, e: int, protect: bool, takes: list[bool]
    ) -> int:
        """How busy hosts of one shape are over [s, e), 0 (all empty) to 10 (none empty),
        from an evenly spread sample of those that take the request (``takes``)."""
        up = empty = 0
        for i in run[:: max(1, len(run) // PRESSURE_SAMPLE)]:
            h = cands[i]
            if takes[h]:
                up += 1
                if self._empty(h, s, e, protect):
                    empty += 1
        return 10 - (10 * empty) // max(1, up)

    def _protected(self, h: int, s: int, e: int) -> list[tuple[int, int, Vector]]:
        """Preemptibles on a host still inside their minimum lifetime somewhere in [s, e)."""
        out = []
        for sid in self._pre_on.get(h, ()):
            a = to_minutes(self._pre[sid].started_at)
            b = a + self._min_life
            if a < e and b > s:
                out.append((a, b, self._pre_vec[sid]))
        return out

    def _peak(self, h: int, s: int, e: int, protect: bool) -> Vector:
        tl = self._tl[h]
        if protect and h in self._pre_on:
            extra = self._protected(h, s, e)
            if extra:
                tmp = copy_timeline(tl)
                for a, b, vec in extra:
                    tmp.add(max(a, s), min(b, e), vec, 1)
                return tmp.peak(s, e)
        return tl.peak(s, e)

    def _room(
        self, h: int, s: int, e: int, protect: bool, overlay: dict[int, list[int]]
    ) -> list[int]:
        return [
            c - p - x
            for c, p, x in zip3(self._shape[h].cap, self._peak(h, s, e, protect), overlay.get(h))
        ]

    def _empty(self, h: int, s: int, e: int, protect: bool) -> bool:
        """Nothing reserved on the host over [s, e) (nor a protected preemptible, if asked)."""
        if not self._tl[h].is_free(s, e):
            return False
        return not (protect and h in self._pre_on and self._protected(h, s, e))

    def _place_hosts(
        self,
        req: HostRequest,
        s: int,
        e: int,
        protect: bool,
        overlay: dict[int, list[int]],
        prefer: set[int],
    ) -> list[Allocation] | NoFit:
        cands, runs = self._candidates(("match", req.filter))
        up, tls, size = self._takes_hosts, self._tl, self._size
        enough = max(4 * req.max_count, EXAMINE) if not prefer else len(cands)
        # Candidates come in runs of one shape, smallest first. A request that several shapes
        # satisfy goes to the shape least in demand over the window (the largest share of
        # its hosts still empty), then to the smallest; within a shape, to the host whose
        # free gap in time is the tightest, so long gaps stay whole for long leases.
        free: list[tuple[int, int, tuple[int, int, int, int], int, int]] = []
        busy: list[int] = []
        pre_on = self._pre_on if protect else {}
        for run in runs:
            found: list[int] = []
            for i in run:
                h = cands[i]
                if not up[h] or h in overlay:
                    continue
                tl = tls[h]
                if not tl.is_free(s, e) or (h in pre_on and self._protected(h, s, e)):
                    if len(busy) < MAX_BLOCKERS:
                        busy.append(h)
                    continue
                found.append(h)
                if len(found) >= enough:
                    break
            if not found:
                continue
            pressure = self._pressure(cands, run, s, e, protect, up) if len(runs) > 1 else 0
            for h in found:
                free.append((0 if h in prefer else 1, pressure, size[h], tls[h].slack(s, e), h))
        if len(free) < req.min_count:
            n_up = sum(1 for h in cands if self._up[h])
            held = n_up - sum(1 for h in cands if up[h])
            what = f" matching {req.filter!r}" if req.filter else ""
            vms = f" ({held} of them serve VMs only)" if held else ""
            return NoFit(
                reason=(
                    f"reservation {req.key!r} needs {req.min_count} host(s){what}: "
                    f"{len(cands)} match, {n_up} up{vms}, {len(free)} free {when_text(s, e)}"
                ),
                key=req.key,
                blockers=self._blockers(busy, s, e),
            )
        free.sort()
        out = []
        for *_, h in free[: req.max_count]:
            overlay[h] = list(self._shape[h].whole)
            out.append(
                Allocation(
                    req.key, self._info[h].name, whole_host_amount(self._info[h], self._shape[h])
                )
            )
        return out

    def _place_slots(
        self,
        key: str,
        text: str,
        demand: SlotDemand,
        count: int,
        affinity: str,
        s: int,
        e: int,
        protect: bool,
        overlay: dict[int, list[int]],
        prefer: set[int],
    ) -> list[Allocation] | NoFit:
        cands, runs = self._eligible(text, demand)
        need_hosts = count if affinity == "anti-affinity" else 1
        options: list[_Option] = []
        examined = 0
        busy: list[int] = []
        up, tls, shapes = self._takes_slots, self._tl, self._shape
        if prefer:  # a lease being re-placed looks at its own hosts first
            runs = [range(len(cands))]
            cands = [h for h in cands if h in prefer] + [h for h in cands if h not in prefer]
        # Within each run of one shape: empty hosts are all alike, so a few are kept; partly
        # used hosts get the full check, up to EXAMINE with room in all.
        room_of_empty: dict[Vector, int] = {}
        for run in runs:
            empties: list[_Option] = []
            if prefer:
                quota = len(cands)
            else:
                first = shapes[cands[run.start]]
                per_empty = max_slots(first, first.cap, demand)
                quota = (
                    need_hosts if affinity == "anti-affinity" else -(-count // max(1, per_empty))
                )
                quota = quota + 4 if per_empty > 0 else 0
            for i in run:
                h = cands[i]
                if not up[h]:
                    continue
                shape = shapes[h]
                if h not in overlay and self._empty(h, s, e, protect):
                    n = room_of_empty.get(shape.cap)
                    if n is None:
                        n = room_of_empty[shape.cap] = max_slots(shape, shape.cap, demand)
                    if n > 0 and len(empties) < quota:
                        empties.append(_Option(h, n, list(shape.cap), i, opens=True))
                    elif examined >= EXAMINE:
                        break
                    continue
                if examined >= EXAMINE and h not in prefer:
                    if len(empties) >= quota:
                        break
                    continue
                at_s = tls[h].at(s)
                if at_s[OCC] >= WHOLE or at_s[VCPU] + demand.vcpus > shape.cap[VCPU]:
                    if len(busy) < MAX_BLOCKERS:
                        busy.append(h)
                    continue
                free = self._room(h, s, e, protect, overlay)
                n = max_slots(shape, free, demand)
                if n <= 0:
                    if len(busy) < MAX_BLOCKERS:
                        busy.append(h)
                    continue
                idle = (e - s) - tls[h].busy_minutes(s, e)
                options.append(_Option(h, n, free, i, idle=-(-10 * idle // (e - s))))
                examined += 1
            if empties:
                pressure = self._pressure(cands, run, s, e, protect, up) if len(runs) > 1 else 0
                for opt in empties:
                    opt.pressure = pressure
                    options.append(opt)
        chosen = self._choose(options, demand, count, affinity, s, e, prefer)
        if chosen is None:
            what = f" matching {text!r}" if text else ""
            room = sum(o.slots for o in options)
            unit = "slice(s)" if demand.profile and not demand.vcpus else "slot(s)"
            how = {"affinity": " on one host", "anti-affinity": " on different hosts"}.get(
                affinity, ""
            )
            return NoFit(
                reason=(
                    f"reservation {key!r} needs {count} {unit}{how}{what}: "
                    f"{len(cands)} host(s) could hold it, {len(options)} have room for "
                    f"{room} {when_text(s, e)}"
                ),
                key=key,
                blockers=self._blockers(busy, s, e),
            )
        out = []
        for opt, q in chosen:
            shape = shapes[opt.host]
            got = place_slots(shape, opt.free, demand, q)
            acc = overlay.setdefault(opt.host, [0] * len(shape.cap))
            for i, v in enumerate(got.vector):
                acc[i] += v
            slices: dict[str, int] = {}
            if demand.profile:
                per_slice = profile_units(demand.profile)
                for i, held in got.gpu_units:
                    k = f"{shape.gpu_model[i]}:{demand.profile}"
                    slices[k] = slices.get(k, 0) + held // per_slice
            amount = Amount(
                vcpus=got.vector[VCPU],
                memory_mb=got.vector[MEM],
                disk_gb=got.vector[3],
                gpus=got.gpus,
                slices=tuple(sorted(slices.items())),
                gpu_units=got.gpu_units,
            )
            out.append(Allocation(key, self._info[opt.host].name, amount, slots=got.slots))
        return out

    def _choose(
        self,
        options: list[_Option],
        demand: SlotDemand,
        count: int,
        affinity: str,
        s: int,
        e: int,
        prefer: set[int],
    ) -> list[tuple[_Option, int]] | None:
        """Pick hosts and slot counts best-fit; None if the options cannot hold ``count``."""

        memo: dict[tuple[int, int], tuple[Any, ...]] = {}

        def score(opt: _Option, q: int) -> tuple[Any, ...]:
            got_score = memo.get((opt.host, q))
            if got_score is None:
                got_score = memo[opt.host, q] = raw_score(opt, q)
            return got_score

        def raw_score(opt: _Option, q: int) -> tuple[Any, ...]:
            shape = self._shape[opt.host]
            got = place_slots(shape, opt.free, demand, q)
            left = [f - v for f, v in zip(opt.free, got.vector, strict=True)]
            cap = shape.cap
            if demand.gpus or demand.profile:
                used = {i for i, _ in got.gpu_units}
                # Least room left on the GPUs it touches, then on the other GPUs of the host.
                gpu_waste = (sum(left[GPU0 + i] for i in used), sum(left[GPU0:]))
            else:
                gpu_waste = (sum(left[GPU0:]), 0)
            cpu_left = sum(left[d] / cap[d] for d in (VCPU, MEM) if cap[d] > 0)
            slack = self._tl[opt.host].slack(s, e)
            return (
                opt.host not in prefer,
                opt.idle,
                opt.pressure,
                gpu_waste,
                round(cpu_left, 6),
                -q,
                slack,
                opt.order,
            )

        if affinity == "affinity":
            fits = [o for o in options if o.slots >= count]
            if not fits:
                return None
            return [(min(fits, key=lambda o: score(o, count)), count)]
        if affinity == "anti-affinity":
            fits = [o for o in options if o.slots >= 1]
            if len(fits) < count:
                return None
            fits.sort(key=lambda o: score(o, 1))
            return [(o, 1) for o in fits[:count]]
        if sum(o.slots for o in options) < count:
            return None
        left = count
        pool = list(options)
        chosen: list[tuple[_Option, int]] = []
        while left > 0:
            best = min(pool, key=lambda o: score(o, min(o.slots, left)))
            q = min(best.slots, left)
            chosen.append((best, q))
            pool.remove(best)
            left -= q
        return chosen

    def _blockers(self, hosts: Iterable[int], s: int, e: int) -> tuple[Blocker, ...]:
        out: list[Blocker] = []
        for h in hosts:
            for lid in sorted(self._host_leases[h]):
                ls, le = self._span_of[lid]
                if ls < e and le > s:
                    out.append(Blocker(lid, self._info[h].name, from_minutes(ls), from_minutes(le)))
                    if len(out) >= MAX_BLOCKERS:
                        return tuple(out)
        return tuple(out)


EXAMINE = 48
"""A fit compares about this many partly used hosts with room, and about this many empty
hosts of each shape (more when it needs more), the way Slurm bounds its backfill test."""


PRESSURE_SAMPLE = 64
"""Hosts of a shape looked at (evenly spread) to estimate how busy that shape is."""


MAX_BLOCKERS = 10
"""Bookings named in a refusal, at most."""


@dataclass
class _Option:
    """A host that can take some slots of a request, during a fit."""

    host: int
    slots: int
    free: list[int]
    order: int
    opens: bool = False
    """The host is empty in the window: using it takes a whole host away."""
    idle: int = 10
    """Tenths of the window during which the host holds nothing yet (rounded up)."""
    pressure: int = 0
    """For an empty host: how busy hosts of its shape are in the window (0-10)."""


def check_requests(requests: Sequence[Request]) -> None:
    """Refuse requests that cannot mean anything; compile their filters (FilterError)."""
    keys = [r.key for r in requests]
    if len(set(keys)) != len(keys):
        raise InvalidRequest("reservation keys must be unique within a lease")
    for r in requests:
        compile_filter(r.filter)
        if isinstance(r, HostRequest):
            if not 0 <= r.min_count <= r.max_count or r.max_count < 1:
                raise InvalidRequest(
                    f"reservation {r.key!r}: need 0 <= min_count <= max_count and max_count >= 1"
                )
        elif isinstance(r, FlavorRequest):
            if r.count < 1 or min(r.vcpus, r.memory_mb, r.disk_gb, r.gpus) < 0:
                raise InvalidRequest(f"reservation {r.key!r}: counts and sizes must be positive")
            if r.gpus and r.gpu_profile:
                raise InvalidRequest(
                    f"reservation {r.key!r}: a slot takes whole GPUs or one slice, not both"
                )
            if r.gpu_profile:
                _profile_ok(r.key, r.gpu_profile)
        elif isinstance(r, SliceRequest):
            if r.count < 1:
                raise InvalidRequest(f"reservation {r.key!r}: count must be at least 1")
            if (r.vcpus is None) != (r.memory_mb is None) or min(
                r.vcpus or 0, r.memory_mb or 0
            ) < 0:
                raise InvalidRequest(
                    f"reservation {r.key!r}: give both vcpus and memory_mb per slice, or neither"
                )
            _profile_ok(r.key, r.profile)
        else:
            raise InvalidRequest(f"unknown request kind {type(r).__name__}")


def _profile_ok(key: str, profile: str) -> None:
    try:
        profile_units(profile)
    except ProfileError as err:
        raise InvalidRequest(f"reservation {key!r}: {err}") from None


def _request_order(r: Request) -> int:
    """Whole hosts first, then GPU work, then CPU work (the hardest to place first)."""
    if isinstance(r, HostRequest):
        return 0
    if isinstance(r, SliceRequest) or r.gpus or r.gpu_profile:
        return 1
    return 2
