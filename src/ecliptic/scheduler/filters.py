"""Host filters: a small typed expression language over host properties, compiled once.

    gpu_model == "A100" and rdma
    vcpus >= 64 and rack in ["r1", "r2"]
    driver >= "535.104" or not (cpu_model == "epyc")
    "H100" in gpu_models

Grammar (lowest precedence first)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand [ ("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") operand ]
    operand    := NUMBER | STRING | "true" | "false" | NAME | "[" literals "]" | "(" expr ")"

Typed comparisons (unlike Blazar, which compares extra capabilities as strings, so "10" < "9"):

- two numbers compare as numbers; a number and a numeric string too;
- two strings that both look like versions (``535.104.05``, ``12.2``, ``10``) compare as
  versions, component by component, so ``"535.104" > "535.54"`` and ``"10" > "9"``; other
  numeric strings (``"-3"``, ``"1e3"``) as numbers. A decimal written as a string is a
  version (``"1.25" > "1.5"``): write it unquoted (``credit_rate > 1.25``) to mean a number;
- other strings compare as strings; booleans as booleans (``"true"`` equals ``true``);
- values of different kinds are never equal and never ordered.

A bare name is a truthiness test (``rdma``). A property a host does not have makes the
comparison *unknown*, and unknown propagates like SQL NULL (``unknown or true`` is true,
``not unknown`` is unknown); a filter that ends unknown does not match. So an unknown
property means "no match", never an error. A syntax error is a :class:`FilterError` that
points at the column. Nothing is evaluated with ``eval``: the parse tree is turned into
closures.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ecliptic.scheduler.model import HostInfo

MAX_FILTER_LENGTH = 4096
"""Longer filter texts are refused (they come from users)."""
MAX_NESTING = 32
"""Deeper nesting of parentheses and ``not`` is refused (it would exhaust the stack)."""

Value = Any
"""A property or literal value: str, int, float, bool or a list of those."""

Evaluator = Callable[[Mapping[str, Any]], Value]

_UNKNOWN = object()
"""Result of a comparison or test involving a property the host does not have."""


class FilterError(ValueError):
    """A filter text that does not parse; the message points at the error."""

    code = "invalid_filter"

    def __init__(self, message: str, text: str, column: int, expected: str = "") -> None:
        caret = " " * (column - 1) + "^"
        hint = f" (expected {expected})" if expected else ""
        super().__init__(f"{message} at column {column}{hint}\n  {text}\n  {caret}")
        self.reason = message
        """What is wrong, without the position."""
        self.text = text
        """The filter text."""
        self.column = column
        """1-based column of the offending character."""


# -- tokens -----------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<version>\d+(?:\.\d+){2,}(?![A-Za-z0-9_.]))
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![A-Za-z0-9_.]))
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|<|>|=)
  | (?P<punct>[()\[\],])
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false"}


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, op, punct, name, keyword, end
    text: str
    column: int  # 1-based
    value: Value = None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "\"'":
                raise FilterError("unterminated string", text, pos + 1)
            raise FilterError(f"unexpected character {ch!r}", text, pos + 1)
        kind = m.lastgroup or ""
        word = m.group()
        column = pos + 1
        pos = m.end()
        if kind == "space":
            continue
        if kind == "version":  # an unquoted dotted version such as 535.104.05
            tokens.append(_Token("string", word, column, word))
        elif kind == "number":
            value: Value = float(word) if any(c in word for c in ".eE") else int(word)
            tokens.append(_Token("number", word, column, value))
        elif kind == "string":
            tokens.append(_Token("string", word, column, _unescape(word[1:-1])))
        elif kind == "op":
            tokens.append(_Token("op", "==" if word == "=" else word, column))
        elif kind == "punct":
            tokens.append(_Token("punct", word, column))
        elif word.lower() in _KEYWORDS:
            tokens.append(_Token("keyword", word.lower(), column))
        else:
            tokens.append(_Token("name", word, column, word))
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


# -- values -----------------------------------------------------------------------------------

_VERSION_RE = re.compile(r"^v?\d+(?:\.\d+)*(?:[-+_~][0-9A-Za-z.]+)?$")
_NUMBER_RE = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_FALSY_STRINGS = {"", "0", "false", "no", "off", "none"}


def _is_number(v: Value) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _version_key(v: str) -> tuple[tuple[int, int | str], ...]:
    parts = re.split(r"[.\-+_~]", v.lstrip("v"))
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


def _coerce_pair(a: Value, b: Value) -> tuple[Value, Value] | None:
    """Both values in one comparable kind, or None when they are of different kinds."""
    if isinstance(a, bool) or isinstance(b, bool):
        ba, bb = _as_bool(a), _as_bool(b)
        return (ba, bb) if ba is not None and bb is not None else None
    if _is_number(a) and _is_number(b):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        if _VERSION_RE.match(a) and _VERSION_RE.match(b):
            return _version_key(a), _version_key(b)
        if _NUMBER_RE.match(a) and _NUMBER_RE.match(b):
            return float(a), float(b)
        return a, b
    if _is_number(a) and isinstance(b, str):
        return _number_vs_string(a, b, swap=False)
    if isinstance(a, str) and _is_number(b):
        return _number_vs_string(b, a, swap=True)
    return None


def _number_vs_string(n: int | float, s: str, swap: bool) -> tuple[Value, Value] | None:
    if _NUMBER_RE.match(s):
        pair: tuple[Value, Value] = (n, float(s))
    elif _VERSION_RE.match(s) and isinstance(n, int):
        pair = (_version_key(str(n)), _version_key(s))
    else:
        return None
    return (pair[1], pair[0]) if swap else pair


def _as_bool(v: Value) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def _truthy(v: Value) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in _FALSY_STRINGS
    return bool(v)


def _equal(a: Value, b: Value) -> bool:
    pair = _coerce_pair(a, b)
    return pair is not None and pair[0] == pair[1]


def _contains(container: Value, item: Value) -> Value:
    if isinstance(container, list | tuple):
        return any(_equal(item, x) for x in container)
    if isinstance(container, str) and isinstance(item, str):
        return item in container
    return False


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


def _compare(op: str, a: Value, b: Value) -> Value:
    if a is _UNKNOWN or b is _UNKNOWN:
        return _UNKNOWN
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op == "in":
        return _contains(b, a)
    if op == "not in":
        return not _contains(b, a)
    pair = _coerce_pair(a, b)
    if pair is None or isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return False
    try:
        return _ORDER[op](pair[0], pair[1])
    except TypeError:  # a version component that is a word against a number, say
        return False


# -- parser -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NameUse:
    """A property name a filter reads, and the literal it is compared with, if any."""

    name: str
    column: int
    compared_with: tuple[Value, ...] = ()
    """Literals on the other side of a comparison (one, or a list's items for ``in``)."""
    op: str = ""
    right: bool = False
    """The name stands on the right of a comparison (``gpu_model == A100``: A100)."""
    other: str = ""
    """The property on the other side, when both sides are names."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.uses: list[NameUse] = []

    def deeper(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise FilterError(
                f"nested more than {MAX_NESTING} levels deep: simplify the filter",
                self.text,
                tok.column,
            )

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, tok: _Token, expected: str = "") -> FilterError:
        what = "end of filter" if tok.kind == "end" else repr(tok.text)
        return FilterError(f"unexpected {what}", self.text, tok.column, expected)

    def parse(self) -> Evaluator:
        if self.peek().kind == "end":
            return lambda props: True
        node = self.expr()
        if self.peek().kind != "end":
            raise self.error(self.peek())
        return node

    def is_keyword(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "keyword" and tok.text == word

    def expr(self) -> Evaluator:
        parts = [self.and_expr()]
        while self.is_keyword("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else _or(parts)

    def and_expr(self) -> Evaluator:
        parts = [self.not_expr()]
        while self.is_keyword("and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else _and(parts)

    def not_expr(self) -> Evaluator:
        if self.is_keyword("not"):
            self.deeper(self.take())
            inner = self.not_expr()
            self.depth -= 1
            return _not(inner)
        return self.comparison()

    def comparison(self) -> Evaluator:
        start = self.i
        left = self.operand()
        name = self.tokens[start] if self.i == start + 1 else None
        tok = self.peek()
        if tok.kind == "op":
            op = self.take().text
        elif tok.kind == "keyword" and tok.text == "in":
            self.take()
            op = "in"
        elif tok.kind == "keyword" and tok.text == "not" and self._next_is_in():
            self.take()
            self.take()
            op = "not in"
        else:
            if name is not None and name.kind == "name":
                self.uses.append(NameUse(str(name.value), name.column))
            return _test(left)
        at = self.i
        right = self.operand()
        if self.peek().kind == "op":
            raise self.error(self.peek(), "'and', 'or' or ')'")
        self._note(op, name, self.tokens[at] if self.i == at + 1 else None, at)
        if name is not None and name.kind == "name":
            const = self.tokens[at] if self.i == at + 1 else None
            fast = _plain_comparison(op, str(name.value), const, right)
            if fast is not None:
                return fast
        return _comparison(op, left, right)

    def _note(self, op: str, left: _Token | None, right: _Token | None, at: int) -> None:
        """Record the names of a comparison, with the literal on the other side."""

        def literal(tok: _Token | None) -> tuple[Value, ...] | None:
            if tok is None:  # a list or a parenthesised expression
                if self.tokens[at].text == "[":
                    items = self.tokens[at + 1 : self.i - 1]
                    return tuple(t.value for t in items if t.kind in ("number", "string"))
                return None
            if tok.kind in ("number", "string"):
                return (tok.value,)
            if tok.kind == "keyword" and tok.text in ("true", "false"):
                return (tok.text == "true",)
            return None

        lname = str(left.value) if left is not None and left.kind == "name" else ""
        rname = str(right.value) if right is not None and right.kind == "name" else ""
        if left is not None and lname:
            self.uses.append(NameUse(lname, left.column, literal(right) or (), op, other=rname))
        if right is not None and rname:
            lit = literal(left) or ()
            self.uses.append(NameUse(rname, right.column, lit, op, right=True, other=lname))

    def _next_is_in(self) -> bool:
        nxt = self.tokens[self.i + 1]
        return nxt.kind == "keyword" and nxt.text == "in"

    def operand(self) -> Evaluator:
        tok = self.take()
        if tok.kind in ("number", "string"):
            return _const(tok.value)
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            return _const(tok.text == "true")
        if tok.kind == "name":
            return _prop(str(tok.value))
        if tok.kind == "punct" and tok.text == "(":
            self.deeper(tok)
            inner = self.expr()
            if not (self.peek().kind == "punct" and self.peek().text == ")"):
                raise self.error(self.peek(), "')'")
            self.take()
            self.depth -= 1
            return inner
        if tok.kind == "punct" and tok.text == "[":
            return _const(self.literal_list())
        raise self.error(tok, "a value or a property name")

    def literal_list(self) -> list[Value]:
        items: list[Value] = []
        if self.peek().kind == "punct" and self.peek().text == "]":
            self.take()
            return items
        while True:
            tok = self.take()
            if tok.kind in ("number", "string"):
                items.append(tok.value)
            elif tok.kind == "keyword" and tok.text in ("true", "false"):
                items.append(tok.text == "true")
            else:
                raise self.error(tok, "a number or a string")
            sep = self.take()
            if sep.kind == "punct" and sep.text == "]":
                return items
            if not (sep.kind == "punct" and sep.text == ","):
                raise self.error(sep, "',' or ']'")


def _const(v: Value) -> Evaluator:
    return lambda props: v


def _prop(name: str) -> Evaluator:
    return lambda props: props.get(name, _UNKNOWN)


def _test(operand: Evaluator) -> Evaluator:
    def run(props: Mapping[str, Any]) -> Value:
        v = operand(props)
        return v if v is _UNKNOWN else _truthy(v)

    return run


def _comparison(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    return lambda props: _compare(op, left(props), right(props))


def _plain(v: Value) -> bool:
    """A string that no rule of comparison reads as anything but itself: a property equals it
    only when it is that very string (see ``_coerce_pair``)."""
    return (
        isinstance(v, str)
        and not _VERSION_RE.match(v)
        and not _NUMBER_RE.match(v)
        and v.lower() not in ("true", "false")
    )


class _Plain:
    """``name == "word"`` or ``name in [words]`` (``positive``), or their negation, with
    plain words: one dictionary lookup and a set membership per host (the general path
    coerces each host's value, several times slower, and a filter runs on every host of a
    large inventory)."""

    __slots__ = ("name", "positive", "words")

    def __init__(self, name: str, words: frozenset[str], positive: bool) -> None:
        self.name = name
        self.words = words
        self.positive = positive

    def __call__(self, props: Mapping[str, Any]) -> Value:
        v = props.get(self.name, _UNKNOWN)
        if v is _UNKNOWN:
            return _UNKNOWN
        return (isinstance(v, str) and v in self.words) is self.positive


def _plain_comparison(op: str, name: str, const: Any, right: Evaluator) -> Evaluator | None:
    """The fast form of a comparison of a property with plain words, when it has one."""
    if op in ("==", "!=") and const is not None and const.kind == "string":
        if not _plain(const.value):
            return None
        return _Plain(name, frozenset([const.value]), op == "==")
    if op in ("in", "not in"):
        items = right({})
        if not isinstance(items, list) or not items or not all(_plain(x) for x in items):
            return None
        return _Plain(name, frozenset(str(x) for x in items), op == "in")
    return None


def _not(inner: Evaluator) -> Evaluator:
    def run(props: Mapping[str, Any]) -> Value:
        v = inner(props)
        return v if v is _UNKNOWN else not _truthy(v)

    return run


def _and(parts: Sequence[Evaluator]) -> Evaluator:
    def run(props: Mapping[str, Any]) -> Value:
        result: Value = True
        for part in parts:
            v = part(props)
            if v is _UNKNOWN:
                result = _UNKNOWN
            elif not _truthy(v):
                return False
        return result

    return run


def _or(parts: Sequence[Evaluator]) -> Evaluator:
    def run(props: Mapping[str, Any]) -> Value:
        result: Value = False
        for part in parts:
            v = part(props)
            if v is _UNKNOWN:
                result = _UNKNOWN
            elif _truthy(v):
                return True
        return result

    return run


# -- public -----------------------------------------------------------------------------------


class Filter:
    """A compiled filter: call it on a host's property mapping to know whether the host matches."""

    __slots__ = ("_run", "text", "uses", "words")

    def __init__(self, text: str, run: Evaluator, uses: Sequence[NameUse] = ()) -> None:
        self.text = text
        """The source text."""
        self.uses = tuple(uses)
        """The property names the filter reads, where, and what they are compared with."""
        self._run = run
        self.words: tuple[str, frozenset[str]] | None = (
            (run.name, run.words) if isinstance(run, _Plain) and run.positive else None
        )
        """For ``name == "word"`` or ``name in [words]`` (plain words): the property and the
        words; a host matches exactly when its value is one of them (engines index this)."""

    def __call__(self, props: Mapping[str, Any]) -> bool:
        """Whether a host with these properties matches (unknown counts as no)."""
        v = self._run(props)
        return v is not _UNKNOWN and _truthy(v)

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


@lru_cache(maxsize=2048)
def compile_filter(text: str) -> Filter:
    """Parse ``text`` into a :class:`Filter`; raises :class:`FilterError` on a syntax error."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterError(
            f"filter longer than {MAX_FILTER_LENGTH} characters", text[:40] + "...", 41
        )
    parser = _Parser(text)
    run = parser.parse()
    return Filter(text, run, parser.uses)


BUILTIN_PROPERTIES = (
    "name",
    "vcpus",
    "memory_mb",
    "memory_gb",
    "disk_gb",
    "gpu_model",
    "gpu_count",
    "gpu_models",
    "rdma",
)
"""Properties every host has (``host_properties``)."""


def _kind(v: Value) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if _is_number(v):
        return "a number"
    if isinstance(v, list | tuple):
        return "a list"
    return "a text"


def check_filter(f: Filter, hosts: Iterable[HostInfo]) -> None:
    """Refuse a filter that names a property no host has, or compares a property with a
    value of a kind it can never equal or be ordered with (a typo would match nothing)."""
    if not f.uses:
        return
    hosts = list(hosts)
    seen: dict[str, list[Value]] = {}
    for use in f.uses:
        if use.name not in seen:
            seen[use.name] = _values_of(use.name, hosts)
        values = seen[use.name]
        if not values:
            raise FilterError(_unknown(use, hosts), f.text, use.column)
        for lit in use.compared_with:
            if use.op in ("in", "not in") and not use.right and isinstance(values[0], list):
                continue  # "H100" in gpu_models is checked the other way round
            if any(_comparable(use.op, v, lit, use.right) for v in values):
                continue
            raise FilterError(
                f"property '{use.name}' is {_kind(values[0])} on every host, so it never "
                f"compares with {lit!r} ({_kind(lit)}): "
                + (
                    "write a number, e.g. vcpus > 16"
                    if _is_number(values[0])
                    else "check the value"
                ),
                f.text,
                use.column,
            )


_BUILTIN_SAMPLES: dict[str, Value] = {
    "name": "",
    "vcpus": 0,
    "memory_mb": 0,
    "memory_gb": 0,
    "disk_gb": 0,
    "gpu_model": "",
    "gpu_count": 0,
    "gpu_models": [],
    "rdma": False,
}
"""The kind of value of each built-in property (every host has them)."""


def _values_of(name: str, hosts: Sequence[HostInfo]) -> list[Value]:
    """Distinct kinds of value ``name`` takes on ``hosts`` (one sample each; [] if none)."""
    if name in _BUILTIN_SAMPLES and hosts:
        return [_BUILTIN_SAMPLES[name]]
    samples: dict[str, Value] = {}
    for h in hosts:
        props = h.properties
        if name in props:
            v = props[name]
            samples.setdefault(_kind(v), v)
            if len(samples) == 4:
                break
    return list(samples.values())


def _comparable(op: str, value: Value, lit: Value, right: bool) -> bool:
    if op in ("in", "not in"):
        if right:  # "x" in prop: prop is a list or a text
            return isinstance(value, list | str)
        return _coerce_pair(value, lit) is not None
    return _coerce_pair(value, lit) is not None


def _unknown(use: NameUse, hosts: Sequence[HostInfo]) -> str:
    names = set(BUILTIN_PROPERTIES)
    for h in hosts:
        names.update(h.properties)
    close = difflib.get_close_matches(use.name, sorted(names), n=1, cutoff=0.6)
    msg = f"no host has a property '{use.name}'"
    if use.right and use.other:
        return f'{msg}: to compare {use.other} with the text {use.name}, quote it: "{use.name}"'
    if close:
        return f"{msg} (did you mean '{close[0]}'?)"
    return f"{msg}; known properties: {', '.join(sorted(names))}"


def host_properties(host: HostInfo) -> dict[str, Any]:
    """The properties filters see for ``host``: the built-in ones, then ``host.properties``."""
    models = [g.model for g in host.gpus if g.count > 0]
    props: dict[str, Any] = dict(host.properties)
    props.update(
        name=host.name,
        vcpus=host.vcpus,
        memory_mb=host.memory_mb,
        memory_gb=host.memory_mb // 1024,
        disk_gb=host.disk_gb,
        gpu_model=models[0] if models else "",
        gpu_count=sum(g.count for g in host.gpus),
        gpu_models=models,
        rdma=host.rdma,
    )
    return props
