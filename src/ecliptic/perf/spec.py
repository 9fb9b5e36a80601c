"""What a benchmark and a benchmark set are: validated specs, and how a set expands.

A benchmark spec names its ``kind`` (a registered kind: ``iperf3``, ``mpi_pingpong`` …), the
``network`` it measures, optional link ``shaping``, where it runs (fresh servers made for the
run, or an existing ``platform``'s servers) and one section of parameters per kind, named
after the kind (``iperf3: {duration: 5}``). Only the section of the chosen kind is used; a
set can therefore permute ``kind`` itself and keep every kind's parameters in its template.

A set is a template spec, permutations (``product``: every combination of the given values;
``explicit``: whole overrides, appended) and repetitions. A permutation's keys are spec
fields; a dotted key reaches into a section (``iperf3.streams``). Each permutation is merged
into the template (dictionaries deeply, other values replaced) and validated as a spec, so a
set whose permutation is invalid is refused before anything runs, naming the permutation.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ecliptic.perf.kinds import registry

NetworkMode = Literal["bridge", "direct", "host"]
"""``bridge``: a normal port (veth into the network's bridge); ``direct``: an SR-IOV-style
direct port (a macvlan on the network's emulated physical function); ``host``: the host's own
network stack, with no virtual switch or port in the path (on the local cloud, where every
host is this machine, both ends run in one server and talk over its loopback)."""

NAME_RE = r"^[a-z][a-z0-9-]{0,62}$"
MAX_PERMUTATIONS = 256
MAX_REPETITIONS = 50
MAX_DEPTH = 8
"""How deeply a template or a permutation may nest (a spec needs three levels)."""
_ID_LIKE_RE = re.compile(r"^[0-9a-f]{32}$")
_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)(bit|bps)$", re.IGNORECASE)
_SIZE_RE = re.compile(r"^(\d+)\s*([kmg]?)(i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
_BIN = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class Strict(BaseModel):
    """Frozen, and unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_rate(text: str | int) -> int:
    """A link rate in bits per second: ``"1gbit"``, ``"500mbit"``, or an integer."""
    if isinstance(text, int):
        return text
    m = _RATE_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a rate such as '1gbit', '500mbit' or '100kbit'")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if m.group(3).lower() == "bps":  # bytes per second
        value *= 8
    return int(value)


def parse_size(text: str | int) -> int:
    """A size in bytes: ``"64kb"``, ``"1m"``, ``"4KiB"``, or an integer (binary multiples)."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size such as '64kb', '1m' or 4096")
    return int(m.group(1)) * _BIN[m.group(2).lower()]


class Shaping(Strict):
    """A token bucket (tc ``tbf``) on each server's measured interface: a slower fabric."""

    rate: Annotated[int, Field(ge=8_000, le=400_000_000_000)]
    """Rate in bits per second (``"1gbit"``, ``"100mbit"`` are accepted)."""
    burst: Annotated[int, Field(ge=1_500, le=1 << 30)] = 128 * 1024
    """Bucket size in bytes (``"64kb"``)."""
    latency_ms: Annotated[float, Field(gt=0, le=10_000)] = 50.0
    """How long a packet may wait in the bucket before it is dropped."""

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        return parse_rate(v) if isinstance(v, str) else v

    @field_validator("burst", mode="before")
    @classmethod
    def _burst(cls, v: Any) -> Any:
        return parse_size(v) if isinstance(v, str) else v


class BenchmarkSpec(Strict):
    """One benchmark: what to measure, over which wiring, where."""

    kind: str
    """A registered kind (``ecliptic bench kinds``)."""
    network: NetworkMode = "bridge"
    shaping: Shaping | None = None
    platform: Annotated[str | None, Field(pattern=NAME_RE)] = None
    """Run on this platform's servers instead of fresh ones."""
    image: Annotated[str, Field(pattern=NAME_RE)] = "perf"
    """Image of the fresh servers."""
    flavor: Annotated[str, Field(min_length=1, max_length=63)] = "m1.small"
    """Flavor of the fresh servers."""
    lease: Annotated[str | None, Field(pattern=NAME_RE)] = None
    """Place the fresh servers inside this lease (its reservation pays for them)."""
    timeout_s: Annotated[float, Field(gt=0, le=6 * 3600)] = 1800.0
    """The whole run (servers, tool, cleanup) fails after this long."""
    params: dict[str, Any] = {}
    """The chosen kind's parameters, validated by its model (filled from the kind's
    section; shown with every default)."""

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind_name = data.get("kind")
        if not isinstance(kind_name, str):
            raise ValueError(f"'kind' must be one of: {', '.join(registry.names())}")
        kind = registry.find(kind_name)  # ValueError naming the kinds
        sections = {k: data.pop(k) for k in list(data) if k in registry.names()}
        given = data.pop("params", None)
        if given is not None and kind_name in sections:
            raise ValueError(f"give the parameters once: either 'params' or '{kind_name}'")
        raw = given if given is not None else sections.get(kind_name, {})
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValueError(f"'{kind_name}' must be a mapping of its parameters")
        for name, section in sections.items():  # other kinds' sections must still be sane
            if name != kind_name:
                if not isinstance(section, dict):
                    raise ValueError(f"'{name}' must be a mapping of its parameters")
                _validate_params(registry.find(name), name, section)
        data["params"] = _validate_params(kind, kind_name, raw)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkSpec:
        kind = registry.find(self.kind)
        if self.network not in kind.networks:
            raise ValueError(
                f"{self.kind} does not measure a network mode '{self.network}'; "
                f"use one of: {', '.join(kind.networks)}"
            )
        if kind.needs_platform and self.platform is None:
            raise ValueError(f"{self.kind} runs on a platform: give 'platform: NAME'")
        if self.shaping is not None and self.network == "host":
            raise ValueError("shaping applies to a server's port; 'host' network has none")
        return self

    def kind_params(self) -> BaseModel:
        """The chosen kind's parameters as its model."""
        return registry.find(self.kind).params.model_validate(self.params)


def _validate_params(kind: registry.Kind, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    try:
        return kind.params.model_validate(raw).model_dump(mode="json")
    except ValidationError as e:
        raise ValueError(f"{name}: {_problems(e)}") from None


def _problems(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors()
    )


class Permutations(Strict):
    """How a set varies its template."""

    product: Annotated[dict[str, list[Any]], Field(max_length=16)] = {}
    """Every combination of these values (itertools.product, keys in the given order)."""
    explicit: Annotated[list[dict[str, Any]], Field(max_length=MAX_PERMUTATIONS)] = []
    """Whole overrides, appended after the product's."""

    @field_validator("product")
    @classmethod
    def _values(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"product.{key}: give at least one value")
        # Counted before anything is expanded: a product of 16 keys of a few values each
        # is billions of combinations.
        n = math.prod(len(values) for values in v.values())
        if n > MAX_PERMUTATIONS:
            raise ValueError(
                f"{' x '.join(str(len(x)) for x in v.values())} = {n} combinations; "
                f"at most {MAX_PERMUTATIONS} permutations are allowed"
            )
        return v

    @field_validator("product", "explicit", mode="before")
    @classmethod
    def _shallow(cls, v: Any) -> Any:
        _check_depth(v, "permutations")
        return v


class BenchmarkSetSpec(Strict):
    """A benchmark set: a template, its permutations, and how often each is repeated."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    template: dict[str, Any]
    permutations: Permutations = Permutations()
    repetitions: Annotated[int, Field(ge=1, le=MAX_REPETITIONS)] = 1

    @field_validator("name")
    @classmethod
    def _not_an_id(cls, v: str) -> str:
        if _ID_LIKE_RE.match(v):
            raise ValueError(
                f"'{v}' looks like an object id (32 hexadecimal characters), so it could hide "
                "a run's id: choose a name with a letter after 'f' or a '-'"
            )
        return v

    @field_validator("template", mode="before")
    @classmethod
    def _shallow(cls, v: Any) -> Any:
        _check_depth(v, "template")
        return v

    @model_validator(mode="after")
    def _expands(self) -> BenchmarkSetSpec:
        expand(self)  # every permutation must make a valid spec
        return self


def _check_depth(value: Any, where: str, depth: int = 0) -> None:
    """Refuse values nested deeper than :data:`MAX_DEPTH` (copying or merging them would
    exhaust Python's stack: an internal error instead of an answer)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where} nests deeper than {MAX_DEPTH} levels; a spec needs three")
    if isinstance(value, dict):
        for v in value.values():
            _check_depth(v, where, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_depth(v, where, depth + 1)


def permutations(p: Permutations) -> list[dict[str, Any]]:
    """The permutations in run order: the product's, then the explicit ones (at least one)."""
    keys = list(p.product)
    out = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*p.product.values())]
    if not keys:
        out = []
    out += [dict(e) for e in p.explicit]
    if len(out) > MAX_PERMUTATIONS:
        raise ValueError(f"{len(out)} permutations; at most {MAX_PERMUTATIONS} are allowed")
    return out or [{}]


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``: dictionaries deeply, other values replaced;
    a dotted key (``iperf3.streams``) reaches into nested dictionaries."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        path = key.split(".")
        target = out
        for part in path[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        last = path[-1]
        if isinstance(value, dict) and isinstance(target.get(last), dict):
            target[last] = merge(target[last], value)
        else:
            target[last] = copy.deepcopy(value)
    return out


def expand(s: BenchmarkSetSpec) -> list[tuple[dict[str, Any], BenchmarkSpec]]:
    """Each permutation with the spec it makes; ValueError naming the first invalid one."""
    out = []
    for i, perm in enumerate(permutations(s.permutations)):
        try:
            spec = BenchmarkSpec.model_validate(merge(s.template, perm))
        except ValidationError as e:
            label = ", ".join(f"{k}={v}" for k, v in perm.items()) or "the template"
            raise ValueError(f"permutation {i} ({label}): {_problems(e)}") from None
        out.append((perm, spec))
    return out


def label(perm: dict[str, Any]) -> str:
    """A permutation as people read it: ``network=direct, iperf3.streams=4``."""
    return ", ".join(f"{k}={v}" for k, v in perm.items()) or "(template)"
