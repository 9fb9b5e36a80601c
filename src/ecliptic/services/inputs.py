"""What the lease and catalogue use cases take: their own frozen, validated input types.

These are the services' types, not the API's: the API accepts them as its request bodies
today, but a lease's stored spec is read back with these, so the wire format can change
without breaking stored leases. Every size is bounded and unknown fields are refused.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from ecliptic.naming import FlavorName, Name


class Input(BaseModel):
    """Base of use-case inputs: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FlavorCreate(Input):
    """Create a flavor."""

    name: FlavorName
    vcpus: Annotated[int, Field(ge=1, le=1024)]
    memory_mb: Annotated[int, Field(ge=64, le=16 * 1024 * 1024)]
    disk_gb: Annotated[int, Field(ge=0, le=1024 * 1024)] = 0
    gpu_model: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    gpus: Annotated[int, Field(ge=0, le=64)] = 0
    kind: Literal["vm", "baremetal"] = "vm"
    reservation_only: StrictBool | None = Field(
        default=None,
        description="servers of it run only inside a lease (or preemptible); "
        "default: yes for GPU and bare-metal flavors",
    )
    description: Annotated[str, Field(max_length=1000)] = ""


DURATION_RE = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*$")


MAX_DURATION = timedelta(days=3660)
"""No duration may exceed ten years (a lease, a grace, a search horizon...)."""


def parse_duration(value: str) -> timedelta:
    """``48h``, ``2d``, ``90m``, ``1d12h`` -> timedelta (minute resolution)."""
    if value.strip().isdigit():
        raise ValueError(
            f"'{value}' has no unit: a duration needs one, like {value.strip()}h, "
            f"{value.strip()}m or {value.strip()}d"
        )
    m = DURATION_RE.match(value)
    if not m or not any(m.groups()):
        raise ValueError(f"'{value}' is not a duration: write it like 48h, 2d, 90m or 1d12h")
    d, h, mins = (int(x or 0) for x in m.groups())
    if d > MAX_DURATION.days or h > MAX_DURATION.days * 24 or mins > MAX_DURATION.days * 1440:
        raise ValueError(f"'{value}' is too long: durations go up to {MAX_DURATION.days}d")
    out = timedelta(days=d, hours=h, minutes=mins)
    if out > MAX_DURATION:
        raise ValueError(f"'{value}' is too long: durations go up to {MAX_DURATION.days}d")
    return out


def _duration(value: str) -> str:
    parse_duration(value)
    return value


def _filter_text(value: str) -> str:
    from ecliptic.scheduler.filters import compile_filter

    compile_filter(value)
    return value


Duration = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_duration)]
FilterText = Annotated[str, Field(max_length=2000), AfterValidator(_filter_text)]
Count = Annotated[int, Field(ge=1, le=10_000)]
PROFILE_RE = re.compile(r"^[1-7]g\.[0-9]{1,4}gb$")


def _profile(value: str) -> str:
    if not PROFILE_RE.match(value):
        raise ValueError(
            f"'{value}' is not a GPU slice profile: write Ng.Mgb with N from 1 to 7 "
            "(a GPU has 7 compute units), e.g. 1g.10gb or 3g.40gb"
        )
    return value


GpuProfile = Annotated[str, Field(max_length=16), AfterValidator(_profile)]


class HostReservationIn(Input):
    """Whole hosts matching a filter: ``count``, or a ``min``-``max`` range."""

    kind: Literal["host"]
    name: Name = "hosts"
    count: Count | None = None
    min: Count | None = None
    max: Count | None = None
    where: FilterText = ""


class FlavorReservationIn(Input):
    """Instance slots of a flavor's size (or an explicit size), with (anti-)affinity."""

    kind: Literal["flavor"]
    name: Name = "slots"
    count: Count = 1
    flavor: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    vcpus: Annotated[int, Field(ge=1, le=1024)] | None = None
    memory_mb: Annotated[int, Field(ge=64, le=16 * 1024 * 1024)] | None = None
    disk_gb: Annotated[int, Field(ge=0, le=1024 * 1024)] | None = None
    gpu_model: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    gpus: Annotated[int, Field(ge=0, le=64)] | None = None
    gpu_profile: GpuProfile | None = None
    affinity: Literal["none", "affinity", "anti-affinity"] = "none"
    where: FilterText = ""


class SliceReservationIn(Input):
    """GPU slices of a profile (``1g.10gb`` is a seventh of an A100) on any host offering it."""

    kind: Literal["gpu_slice"]
    name: Name = "slices"
    count: Count = 1
    profile: GpuProfile
    gpu_model: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    flavor: Annotated[str, Field(min_length=1, max_length=63)] | None = Field(
        default=None,
        description="the flavor of the servers each slice is for: its vCPUs and memory are "
        "booked with the slice (default: the slice's share of its host's)",
    )
    where: FilterText = ""


ReservationIn = Annotated[
    HostReservationIn | FlavorReservationIn | SliceReservationIn, Field(discriminator="kind")
]
When = datetime | Literal["now"]


class LeaseCreate(Input):
    """Book capacity for a window: give ``end`` or ``duration``."""

    name: Name
    start: When = "now"
    end: datetime | None = None
    duration: Duration | None = None
    before_end: Duration | None = None
    grace: Duration = "10m"
    reservations: Annotated[list[ReservationIn], Field(min_length=1, max_length=16)]


class ReservationResize(Input):
    """A new size for one reservation of a lease (grow or shrink)."""

    name: Name
    count: Count


class LeaseUpdate(Input):
    """Change a lease: move it, extend or shorten it, grow or shrink a reservation."""

    start: When | None = None
    end: datetime | None = None
    extend: Duration | None = None
    shorten: Duration | None = None
    before_end: Duration | None = None
    reservations: Annotated[list[ReservationResize], Field(max_length=16)] = []
