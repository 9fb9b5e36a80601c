"""Templates of platform types: sandboxed Jinja2, strict about what they name.

A template sees ``params`` (the platform's parameters), ``secrets`` (made once per
platform), ``platform`` (``name``, ``id``), ``servers`` (every server: ``name``, ``role``,
``index``, ``address``, ``fabric_address``), ``roles`` (role name -> its servers),
``services`` (name -> ``url``, ``subdomain``, ``label``) and ``server`` (the one the file is
written to). The sandbox refuses attribute access to Python internals; an undefined name is
an error, never an empty string; output is bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.sandbox import ImmutableSandboxedEnvironment

CONTEXT_NAMES = ("params", "secrets", "platform", "servers", "roles", "services", "server")
"""The names a template may use at its top level."""
MAX_OUTPUT = 1 << 20
"""Longest rendering (bytes of text): a runaway loop is an error, not a full disk."""


class TemplateError(ValueError):
    """A template that does not parse, names what does not exist, or fails to render."""


class _Env(ImmutableSandboxedEnvironment):
    """The one environment: sandboxed, immutable, strict, no autoescape (files are not HTML),
    and ranges bounded."""

    def __init__(self) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )


_ENV = _Env()


def _parse(source: str, where: str) -> nodes.Template:
    try:
        return _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: template line {exc.lineno}: {exc.message}") from None


def _check_names(tree: nodes.Node, known: Mapping[str, set[str]], where: str) -> None:
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for name in tree.find_all(nodes.Name):
        if name.ctx != "load" or name.name in assigned:
            continue
        if name.name not in CONTEXT_NAMES:
            raise TemplateError(
                f"{where}: template line {name.lineno}: '{name.name}' is not known to "
                "templates (they see "
                f"{', '.join(CONTEXT_NAMES)})"
            )
    for node in tree.find_all(nodes.Getattr):
        target = node.node
        if isinstance(target, nodes.Name) and target.name in known and target.ctx == "load":
            if target.name in assigned:
                continue
            if node.attr not in known[target.name]:
                names = ", ".join(sorted(known[target.name])) or "none"
                raise TemplateError(
                    f"{where}: template line {node.lineno}: {target.name}.{node.attr} is not "
                    f"declared ({target.name}: {names})"
                )


def check_template(source: str, known: Mapping[str, set[str]], where: str) -> None:
    """Parse ``source`` and check the names it uses; ``known`` maps ``params``/``secrets``/
    ``services``/``roles`` to their declared names."""
    if "{" not in source:
        return
    _check_names(_parse(source, where), known, where)


def check_expression(source: str, known: Mapping[str, set[str]], where: str) -> None:
    """Like ``check_template`` for a condition (``params.desktop and params.gpus > 0``)."""
    _check_names(_parse("{{ " + source + " }}", where), known, where)


def render(source: str, context: Mapping[str, Any], where: str = "template") -> str:
    """``source`` rendered with ``context`` (``TemplateError`` saying where and why)."""
    if "{" not in source:
        return source
    try:
        template = _ENV.from_string(source)
        out: list[str] = []
        size = 0
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateError(f"{where}: renders to more than {MAX_OUTPUT} bytes")
            out.append(chunk)
        return "".join(out)
    except TemplateError:
        raise
    except (UndefinedError, SecurityError) as exc:
        raise TemplateError(f"{where}: {exc}") from None
    except (JinjaError, ArithmeticError, TypeError, ValueError, OverflowError) as exc:
        raise TemplateError(f"{where}: {type(exc).__name__}: {exc}") from None


def evaluate(source: str, context: Mapping[str, Any], where: str = "condition") -> bool:
    """The truth of a condition."""
    try:
        fn = _ENV.compile_expression(source, undefined_to_none=False)
        return bool(fn(**context))
    except (UndefinedError, SecurityError) as exc:
        raise TemplateError(f"{where}: {exc}") from None
    except (JinjaError, ArithmeticError, TypeError, ValueError) as exc:
        raise TemplateError(f"{where}: {type(exc).__name__}: {exc}") from None
