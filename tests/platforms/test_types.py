"""The platform type format: every built-in loads, mistakes are reported where they are, and
templates are sandboxed and strict."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecliptic.platforms.templates import TemplateError, evaluate, render
from ecliptic.platforms.types import BUILTIN_DIR, Catalogue, TypeFileError, load_type, parse_type
from ecliptic.services.platforms import plan, resolve_parameters

WEB = (Path(__file__).parent / "types" / "web.yaml").read_text()


def test_every_builtin_type_loads() -> None:
    types, broken = Catalogue().scan()
    assert not broken, broken
    assert {"workstation", "slurm", "jupyter", "dask"} <= set(types)
    for path in BUILTIN_DIR.glob("*.yaml"):
        t = load_type(path)
        assert t.usage.strip() and t.label, path


def _problems(text: str) -> list[str]:
    with pytest.raises(TypeFileError) as exc:
        parse_type(text, "x.yaml")
    return [f"{p.line}:{p.column} {p.message}" for p in exc.value.problems]


@pytest.mark.parametrize(
    ("old", "new", "where", "says"),
    [
        ("count: {param: workers}", "count: {param: wrokers}", "17:", "did you mean 'workers'"),
        (
            "liveness_path: /index.html",
            "livenes_path: /index.html",
            "51:",
            "did you mean 'liveness_path'",
        ),
        ("{{ params.greeting }}", "{{ params.greting }}", "24:", "params.greting is not declared"),
        ("worker {{ s.name }}", "worker {{ s.name }", "26:", "unexpected '}'"),
        ('version: "1"', "version: 1", "5:", "quote the version"),
        ("kind: integer", "kind: int", "9:", "Input should be 'string'"),
        ("roles: [worker]", "roles: [wroker]", "39:", "did you mean 'worker'"),
        ("role: web, port: 8000", "role: wbe, port: 8000", "51:", "did you mean 'web'"),
        ("max: 8", "max: 999", "9:", "at most 64"),
        (
            "- {name: lease, kind: lease}",
            "- {name: lease, kind: lease, min: 3}",
            "7:",
            "'min'/'max'",
        ),
        ("name: web\n", "name: web\nname2: x\n", "3:1", "unknown key 'name2'"),
        ("default: hello, max: 40", "default: 'a very long greeting', max: 4", "10:", "default"),
    ],
)
def test_a_typo_is_reported_at_its_line(old: str, new: str, where: str, says: str) -> None:
    assert old in WEB
    problems = _problems(WEB.replace(old, new, 1))
    assert any(p.startswith(where) and says in p for p in problems), problems


def test_bad_yaml_is_reported_at_its_line() -> None:
    problems = _problems("name: x\nlabel: [unclosed\n")
    assert problems and problems[0].startswith("3:") and "not valid YAML" in problems[0]


def test_parameters_are_checked_and_defaults_filled() -> None:
    t = parse_type(WEB)
    p = resolve_parameters(t, {"workers": 3})
    assert p["workers"] == 3 and p["greeting"] == "hello" and p["size"] == "m1.tiny"
    assert [s.name for s in plan(t, p, "x")] == ["x-web1", "x-worker1", "x-worker2", "x-worker3"]
    for bad, says in (
        ({"workers": 9}, "at most 8"),
        ({"workers": True}, "whole number"),
        ({"workers": "3"}, "whole number"),
        ({"fail_at": "sometimes"}, "must be one of"),
        ({"extra": "yes"}, "true or false"),
        ({"greeting": "x" * 41}, "at most 40"),
        ({"greeting": "a\x00b"}, "NUL"),
        ({"size": "../etc"}, "not a size name"),
        ({"nope": 1}, "has no parameter 'nope'"),
    ):
        with pytest.raises(Exception) as exc:
            resolve_parameters(t, bad)
        assert says in str(exc.value), (bad, exc.value)
    # A patch keeps what it does not name.
    assert resolve_parameters(t, {"extra": True}, old=p)["workers"] == 3


def test_templates_are_sandboxed_strict_and_bounded() -> None:
    ctx = {"params": {"x": "{{ 7 * 6 }}"}}
    # A parameter's value is data, never a template.
    assert render("v={{ params.x }}", ctx) == "v={{ 7 * 6 }}"
    for evil in (
        "{{ ''.__class__.__mro__ }}",
        "{{ params.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ range(10**9) | list | length }}",
        "{% for i in range(100000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}",
        "{{ params.missing }}",
    ):
        with pytest.raises(TemplateError):
            render(evil, ctx)
    assert evaluate("params.x != ''", ctx) is True
    with pytest.raises(TemplateError):
        evaluate("params.nope", ctx)
