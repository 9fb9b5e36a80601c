"""The platform type format: a pydantic model of the YAML file, and its loader.

A platform type is data: what a user may choose (parameters), which servers make it up
(roles), how they are configured (steps, in order), what it exposes through the gateway
(services) and how to use it (usage text). ``load_type`` reads one file and reports every
error with its line and column; ``Catalogue`` reads the built-ins and operators' folders.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ecliptic.platforms.templates import TemplateError, check_expression, check_template

log = logging.getLogger("ecliptic.platforms")
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "data" / "platforms"
"""Where the packaged platform types are."""

NAME = r"^[a-z][a-z0-9-]{0,30}$"
PARAM_NAME = r"^[a-z][a-z0-9_]{0,39}$"
ROLE_NAME = r"^[a-z][a-z0-9]{0,15}$"
SERVICE_NAME = r"^[a-z][a-z0-9-]{0,20}$"
DAEMON_NAME = r"^[a-z0-9][a-z0-9-]{0,40}$"
ParamKind = Literal["string", "integer", "number", "boolean", "choice", "size", "lease", "image"]
MAX_SERVERS = 64
"""Most servers one role may have (a parameter's ``max`` may not go higher)."""


class Strict(BaseModel):
    """Every part of a platform type: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamRef(Strict):
    """A value taken from a parameter: ``{param: compute_count}``."""

    param: Annotated[str, Field(pattern=PARAM_NAME)]


class Parameter(Strict):
    """Something the user chooses when creating (or patching) a platform."""

    name: Annotated[str, Field(pattern=PARAM_NAME)]
    kind: ParamKind
    label: str = ""
    help: str = ""
    default: Any = None
    required: StrictBool = False
    immutable: StrictBool = False
    """Cannot change after create (a patch naming it is refused)."""
    hidden: StrictBool = False
    """Not shown in forms (its default is used unless given)."""
    min: float | None = None
    """Least value (integer, number) or length (string)."""
    max: float | None = None
    """Greatest value (integer, number) or length (string)."""
    choices: tuple[str, ...] | None = None
    """The allowed values of a ``choice``."""
    pattern: str | None = None
    """A regular expression a ``string`` must match in full."""
    min_vcpus: StrictInt = 0
    """``size``: the least vCPUs a flavor must have."""
    min_memory_mb: StrictInt = 0
    """``size``: the least memory a flavor must have (MiB)."""
    min_gpus: StrictInt = 0
    """``size``: the least GPUs a flavor must have."""

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        if self.kind == "choice" and not self.choices:
            raise ValueError("a 'choice' parameter needs 'choices'")
        if self.kind != "choice" and self.choices is not None:
            raise ValueError(f"'choices' is for 'choice' parameters, not '{self.kind}'")
        if self.pattern is not None:
            if self.kind != "string":
                raise ValueError("'pattern' is for 'string' parameters")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"'pattern' is not a regular expression: {exc}") from None
        if (self.min is not None or self.max is not None) and self.kind not in (
            "integer",
            "number",
            "string",
        ):
            raise ValueError(f"'min'/'max' are for integer, number and string, not '{self.kind}'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min}) is above 'max' ({self.max})")
        if self.kind != "size" and (self.min_vcpus or self.min_memory_mb or self.min_gpus):
            raise ValueError("'min_vcpus', 'min_memory_mb', 'min_gpus' are for 'size' parameters")
        if self.default is not None:
            try:
                self.check(self.default)
            except ValueError as exc:
                raise ValueError(f"its default does not fit it: {exc}") from None
        return self

    @property
    def title(self) -> str:
        """What forms call it."""
        return self.label or self.name.replace("_", " ").capitalize()

    def check(self, value: object) -> object:
        """``value`` as this parameter holds it; ValueError saying what is wrong."""
        kind = self.kind
        shown = _short(value)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, not {shown}")
            return value
        if kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"must be a whole number, not {shown}")
            self._bounds(value)
            return value
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"must be a number, not {shown}")
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            self._bounds(value)
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be text, not {shown}")
        if "\x00" in value:
            raise ValueError("must not hold a NUL character")
        if kind == "choice":
            assert self.choices is not None
            if value not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}, not {shown}")
            return value
        if kind == "string":
            n = len(value)
            if self.min is not None and n < self.min:
                raise ValueError(f"must be at least {self.min:g} characters long")
            if n > (self.max if self.max is not None else 4096):
                raise ValueError(f"must be at most {self.max or 4096:g} characters long")
            if self.pattern is not None and not re.fullmatch(self.pattern, value):
                raise ValueError(f"must match {self.pattern}")
            return value
        # size, lease, image: names checked against the tenancy's objects by the service.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise ValueError(f"{shown} is not a {kind} name")
        return value

    def _bounds(self, value: float) -> None:
        if self.min is not None and value < self.min:
            raise ValueError(f"must be at least {self.min:g}")
        if self.max is not None and value > self.max:
            raise ValueError(f"must be at most {self.max:g}")


def _short(value: object, limit: int = 60) -> str:
    """A value for an error message, cut short (a message never grows with its input)."""
    text = repr(value) if not isinstance(value, list | dict | tuple) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Role(Strict):
    """A kind of server in the platform (login, controller, compute...)."""

    name: Annotated[str, Field(pattern=ROLE_NAME)]
    label: str = ""
    count: Annotated[StrictInt, Field(ge=1, le=MAX_SERVERS)] | ParamRef = 1
    """How many servers: a number, or an integer parameter (which may then be 0)."""
    image: str | ParamRef = "base"
    """The image they boot from, or an ``image`` parameter."""
    size: str | ParamRef
    """Their flavor, or a ``size`` parameter."""
    direct: StrictBool | ParamRef = False
    """Also a ``direct`` port (SR-IOV-style) on the platform's fabric network."""


class File(Strict):
    """A file written into a server before the step's script runs (templated)."""

    path: Annotated[str, Field(pattern=r"^/[^\x00]*$", max_length=255)]
    content: str
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3,4}$")] = "0644"
    owner: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?$")] = (
        "root"
    )


class Daemon(Strict):
    """A long-running process started (and kept running) in the step's servers. It must stay
    in the foreground."""

    name: Annotated[str, Field(pattern=DAEMON_NAME)]
    command: Annotated[tuple[str, ...], Field(min_length=1)]
    """Program and arguments, each templated (no shell)."""
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None


REQUIREMENT = (
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(\[[A-Za-z0-9,._-]{1,100}\])?"
    r"((==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!-]{1,50}(,(==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!-]{1,50})*)?"
)
"""One PyPI requirement (``name``, ``name[extra]>=1.2,<2``): no options, URLs or paths."""
ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".egg")
"""What pip would take for a local file rather than a name: refused."""


class PipInstall(Strict):
    """PyPI packages installed into a venv of the server at configure time. Servers have no
    route out: the wheels are fetched on the host (wheels only: nothing is built there) and
    copied in."""

    venv: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/-]+$")]
    packages: str
    """Whitespace-separated requirements (templated, e.g. ``{{ params.packages }}``)."""


class Step(Strict):
    """One configuration step: files, then a script, then daemons, on every server of its
    roles (in parallel); steps run in the order they are listed."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")]
    roles: Annotated[tuple[Annotated[str, Field(pattern=ROLE_NAME)], ...], Field(min_length=1)]
    label: str = ""
    when: str | None = None
    """A condition on the parameters (``params.desktop``); the step is skipped when false."""
    files: tuple[File, ...] = ()
    run: str | None = None
    """A shell script (``/bin/sh -e``), run as root; not templated: parameters, facts and
    secrets come as environment variables (``ECLIPTIC_P_<NAME>``...)."""
    daemons: tuple[Daemon, ...] = ()
    pip: PipInstall | None = None
    """PyPI packages to install before the script runs."""
    timeout: Annotated[StrictInt, Field(ge=1, le=3600)] = 300
    """Seconds the script may take."""
    watch: str | None = None
    """A template whose value, when it changes, makes the step run again on a server that
    ran it already (files and daemons' commands are watched always)."""
    progress: StrictBool = False
    """Record the script's output lines as events while it runs (long installs)."""


class ServiceDef(Strict):
    """Something the platform exposes through the gateway."""

    name: Annotated[str, Field(pattern=SERVICE_NAME)]
    label: str = ""
    role: Annotated[str, Field(pattern=ROLE_NAME)]
    """On the first server of this role."""
    port: Annotated[StrictInt, Field(ge=1, le=65535)]
    protocol: Literal["http", "tcp"] = "http"
    public: StrictBool = False
    """Reachable without signing in (default: signed-in members on the access list)."""
    liveness_path: str | None = None
    """``GET`` through the tunnel; a failure makes the platform Degraded until it answers."""
    when: str | None = None
    """A condition on the parameters."""

    @model_validator(mode="after")
    def _liveness(self) -> ServiceDef:
        if self.liveness_path is not None:
            if self.protocol != "http":
                raise ValueError("'liveness_path' is for http services")
            if not self.liveness_path.startswith("/"):
                raise ValueError("'liveness_path' starts with '/'")
        return self


class SecretDef(Strict):
    """Made once per platform: random bytes (a munge key, a password) in ``hex`` or
    ``base64``, or an ``ssh-ed25519`` key pair (the private key in OpenSSH's format;
    templates see its public line as ``secrets.<name>_public``)."""

    name: Annotated[str, Field(pattern=PARAM_NAME)]
    bytes: Annotated[StrictInt, Field(ge=8, le=4096)] = 32
    encoding: Literal["hex", "base64", "ssh-ed25519"] = "base64"


class PlatformType(Strict):
    """A platform type: the whole file."""

    name: Annotated[str, Field(pattern=NAME)]
    label: str
    description: str = ""
    logo: str = ""
    """A picture for the catalogue: a URL, or an emoji."""
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,31}$")]
    parameters: tuple[Parameter, ...] = ()
    roles: Annotated[tuple[Role, ...], Field(min_length=1)]
    secrets: tuple[SecretDef, ...] = ()
    steps: tuple[Step, ...] = ()
    services: tuple[ServiceDef, ...] = ()
    usage: str = ""
    """Markdown, templated: how to use what was made."""

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f'quote the version ("{value}"): YAML reads it as a number')
        return value

    @model_validator(mode="after")
    def _references(self) -> PlatformType:
        params = {p.name: p for p in self.parameters}
        _unique("parameter", [p.name for p in self.parameters])
        _unique("role", [r.name for r in self.roles])
        _unique("secret", [s.name for s in self.secrets])
        _unique("step", [s.name for s in self.steps])
        _unique("service", [s.name for s in self.services])
        if sum(1 for p in self.parameters if p.kind == "lease") > 1:
            raise ValueError("a platform type has at most one 'lease' parameter")
        roles = {r.name for r in self.roles}
        for ri, role in enumerate(self.roles):
            for what, ref, kinds in (
                ("count", role.count, ("integer",)),
                ("image", role.image, ("image",)),
                ("size", role.size, ("size",)),
                ("direct", role.direct, ("boolean",)),
            ):
                if isinstance(ref, ParamRef):
                    p = params.get(ref.param)
                    if p is None:
                        raise _at(
                            ("roles", ri, what, "param"),
                            f"role '{role.name}': {what} names parameter '{ref.param}', "
                            f"which is not declared{_did_you_mean(ref.param, params)}",
                        )
                    if p.kind not in kinds:
                        raise _at(
                            ("roles", ri, what, "param"),
                            f"role '{role.name}': {what} needs a {kinds[0]} parameter; "
                            f"'{p.name}' is {p.kind}",
                        )
                    pi = self.parameters.index(p)
                    if what == "count" and (p.min is None or p.min < 0):
                        raise _at(
                            ("parameters", pi, "min" if p.min is not None else "name"),
                            f"parameter '{p.name}' counts servers: give it 'min' (0 or more)",
                        )
                    if what == "count" and (p.max is None or p.max > MAX_SERVERS):
                        raise _at(
                            ("parameters", pi, "max" if p.max is not None else "name"),
                            f"parameter '{p.name}' counts servers: give it 'max' "
                            f"(at most {MAX_SERVERS})",
                        )
        for si, step in enumerate(self.steps):
            for k, r in enumerate(step.roles):
                if r not in roles:
                    raise _at(
                        ("steps", si, "roles", k),
                        f"step '{step.name}' runs on role '{r}', which is not declared"
                        f"{_did_you_mean(r, roles)}",
                    )
            _unique(f"step '{step.name}' daemon", [d.name for d in step.daemons])
        for vi, svc in enumerate(self.services):
            if svc.role not in roles:
                raise _at(
                    ("services", vi, "role"),
                    f"service '{svc.name}' is on role '{svc.role}', which is not declared"
                    f"{_did_you_mean(svc.role, roles)}",
                )
        self._templates(params)
        return self

    def _templates(self, params: dict[str, Parameter]) -> None:
        """Every template and condition parses, and names only declared parameters,
        secrets and services (checked now, not at a user's first create)."""
        names = {
            "params": set(params),
            "secrets": {s.name for s in self.secrets}
            | {f"{s.name}_public" for s in self.secrets if s.encoding == "ssh-ed25519"},
            "services": {s.name for s in self.services},
            "roles": {r.name for r in self.roles},
        }
        checks: list[tuple[tuple[int | str, ...], str, str, bool]] = []
        loc: tuple[int | str, ...]
        for si, step in enumerate(self.steps):
            where = f"step '{step.name}'"
            if step.when is not None:
                checks.append((("steps", si, "when"), step.when, f"{where}: when", True))
            if step.watch is not None:
                checks.append((("steps", si, "watch"), step.watch, f"{where}: watch", False))
            for fi, f in enumerate(step.files):
                loc = ("steps", si, "files", fi)
                checks.append(((*loc, "path"), f.path, f"{where}: file path", False))
                checks.append(((*loc, "content"), f.content, f"{where}: file {f.path}", False))
            if step.pip is not None:
                where_pip = f"{where}: pip packages"
                checks.append(
                    (("steps", si, "pip", "packages"), step.pip.packages, where_pip, False)
                )
            for di, d in enumerate(step.daemons):
                for ai, arg in enumerate(d.command):
                    loc = ("steps", si, "daemons", di, "command", ai)
                    checks.append((loc, arg, f"{where}: daemon '{d.name}'", False))
                for key, value in d.env.items():
                    loc = ("steps", si, "daemons", di, "env", key)
                    checks.append((loc, value, f"{where}: daemon '{d.name}' env", False))
        for vi, svc in enumerate(self.services):
            if svc.when is not None:
                where = f"service '{svc.name}': when"
                checks.append((("services", vi, "when"), svc.when, where, True))
        checks.append((("usage",), self.usage, "usage", False))
        for loc, source, where, expression in checks:
            try:
                if expression:
                    check_expression(source, names, where)
                else:
                    check_template(source, names, where)
            except TemplateError as exc:
                raise _at(loc, str(exc)) from None

    def parameter(self, name: str) -> Parameter | None:
        """The parameter called ``name``."""
        return next((p for p in self.parameters if p.name == name), None)

    @property
    def lease_parameter(self) -> Parameter | None:
        """The parameter that binds the platform to a lease, if the type has one."""
        return next((p for p in self.parameters if p.kind == "lease"), None)


def _at(loc: tuple[int | str, ...], message: str) -> ValueError:
    """A cross-reference error that knows where in the file it is (``parse_type`` points
    at that line instead of the top of the file)."""
    return ValueError(f"@{json.dumps(list(loc))}|{message}")


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{what} '{n}' is declared twice")
        seen.add(n)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Problem:
    """One error in a platform type file."""

    line: int
    """1-based line (0 when the file could not be read)."""
    column: int
    """1-based column."""
    where: str
    """The path to the value (``roles[1].count``)."""
    message: str
    """What is wrong and what to change."""

    def __str__(self) -> str:
        at = f"line {self.line}, column {self.column}" if self.line else "file"
        return f"{at}: {self.where + ': ' if self.where else ''}{self.message}"


class TypeFileError(ValueError):
    """A platform type file that does not load; ``problems`` has every error found."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(str(p) for p in problems))


def _locate(node: yaml.Node | None, loc: tuple[int | str, ...]) -> tuple[yaml.Node | None, bool]:
    """The YAML node at ``loc`` (as deep as it exists) and whether it was found whole; a key
    that is not there points at its mapping, an unknown key at the key itself."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    node = value
                    break
            else:
                return node, False
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node, False
            node = node.value[part]
        else:
            return node, False
    return node, True


def _key_node(node: yaml.Node | None, loc: tuple[int | str, ...]) -> yaml.Node | None:
    """The key node of the last part of ``loc`` (for "extra key" errors)."""
    parent, found = _locate(node, loc[:-1])
    if found and isinstance(parent, yaml.MappingNode):
        for key, _value in parent.value:
            if key.value == loc[-1]:
                return cast(yaml.Node, key)
    return None


def _shifted(node: yaml.Node, lines: int) -> yaml.Node:
    """A stand-in for ``node`` whose position is ``lines`` further down (a line inside a
    multi-line template)."""
    mark = node.start_mark
    moved = yaml.Mark(
        mark.name,
        mark.index,
        mark.line + lines,
        0 if lines else mark.column,
        None,  # no buffer: PyYAML takes None
        None,  # type: ignore[arg-type]
    )
    return yaml.ScalarNode(tag="tag:yaml.org,2002:str", value="", start_mark=moved)


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """A pydantic error location without the union-branch names it adds
    (``count.int`` / ``count.ParamRef``)."""
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and (
            part in ("int", "str", "bool", "float", "constrained-int", "ParamRef")
            or part.startswith(("function-", "constrained-", "tuple[", "list["))
        ):
            continue
        out.append(part)
    return tuple(out)


def parse_type(text: str, source: str = "<text>") -> PlatformType:
    """Parse and validate one platform type; ``TypeFileError`` lists every problem with its
    line and column."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                at = event.start_mark
                raise TypeFileError(
                    source,
                    [
                        Problem(
                            at.line + 1 if at is not None else 0,
                            at.column + 1 if at is not None else 0,
                            "",
                            "anchors and aliases (*name) are not allowed in platform types: "
                            "write the value out",
                        )
                    ],
                )
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        problem = getattr(exc, "problem", None) or str(exc)
        raise TypeFileError(
            source, [Problem(line, col, "", f"not valid YAML: {problem}")]
        ) from None
    if not isinstance(data, dict):
        raise TypeFileError(source, [Problem(1, 1, "", "a platform type is a mapping (name: ...)")])
    try:
        return PlatformType.model_validate(data)
    except ValidationError as exc:
        problems: list[Problem] = []
        seen: set[tuple[int, int, str]] = set()
        for err in exc.errors(include_url=False):
            loc = _model_loc(tuple(err["loc"]))
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                node = _key_node(root, loc)
                allowed = _allowed_keys(loc)
                msg = f"unknown key '{loc[-1]}'{_did_you_mean(str(loc[-1]), allowed)}"
            else:
                if msg.startswith("@") and "|" in msg:
                    where_json, _, msg = msg[1:].partition("|")
                    loc = (*loc, *json.loads(where_json))
                node, found = _locate(root, loc)
                if not found and err["type"] == "missing":
                    msg = f"'{loc[-1]}' is required here"
                line_in = re.search(r"template line (\d+)", msg)
                if line_in and node is not None and found:
                    block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
                    extra = int(line_in.group(1)) - (0 if block else 1)
                    node = _shifted(node, extra)
            mark = node.start_mark if node is not None else None
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
            key = (line, col, msg)
            if key in seen:
                continue
            seen.add(key)
            problems.append(Problem(line, col, _where(loc), msg))
        raise TypeFileError(source, problems) from None


def _allowed_keys(loc: tuple[int | str, ...]) -> set[str]:
    """The keys the model allows where ``loc`` points (for did-you-mean)."""
    model: type[BaseModel] = PlatformType
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return set()
        inner = _model_of(field.annotation)
        if inner is None:
            return set()
        model = inner
    return set(model.model_fields)


def _model_of(annotation: object) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def load_type(path: Path) -> PlatformType:
    """Read one platform type file (``TypeFileError`` on any problem)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TypeFileError(str(path), [Problem(0, 0, "", f"cannot read it: {exc}")]) from None
    return parse_type(text, str(path))


@dataclass(frozen=True)
class CatalogueEntry:
    """A platform type and where it came from."""

    type: PlatformType
    source: str


class Catalogue:
    """The platform types on offer: the built-ins, then operators' folders (a later folder's
    type replaces an earlier one of the same name). Files are read again when they change."""

    def __init__(self, folders: tuple[Path, ...] = ()) -> None:
        self.folders = (BUILTIN_DIR, *folders)
        self._cache: dict[Path, tuple[float, PlatformType | TypeFileError]] = {}

    def _read(self, path: Path) -> PlatformType | TypeFileError:
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            return TypeFileError(str(path), [Problem(0, 0, "", str(exc))])
        hit = self._cache.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            value: PlatformType | TypeFileError = load_type(path)
        except TypeFileError as exc:
            log.warning("platform type %s is not offered: %s", path, exc)
            value = exc
        self._cache[path] = (mtime, value)
        return value

    def scan(self) -> tuple[dict[str, CatalogueEntry], list[TypeFileError]]:
        """Every valid type by name, and the files that did not load."""
        types: dict[str, CatalogueEntry] = {}
        broken: list[TypeFileError] = []
        for folder in self.folders:
            for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
                got = self._read(path)
                if isinstance(got, TypeFileError):
                    broken.append(got)
                else:
                    types[got.name] = CatalogueEntry(got, str(path))
        return types, broken

    def get(self, name: str) -> CatalogueEntry | None:
        """The type called ``name``."""
        return self.scan()[0].get(name)
