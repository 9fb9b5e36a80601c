"""``ecliptic host``: sources and roles in the list, the pool's table, converting, draining,
a host's events, against a live API (pool hosts written into its store)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ecliptic.client import ApiError
from tests.cli.conftest import Cli, Cloud
from tests.pool_data import PoolHost, add_pool_hosts, with_ironic


@pytest.fixture(scope="module")
def hosts(cloud: Cloud) -> dict[str, str]:
    """Three pool hosts in the store (name to Ironic node)."""
    return add_pool_hosts(
        cloud.runtime,
        [
            PoolHost("cli-bm"),
            PoolHost("cli-hv", phase="HYPERVISOR", reason="keep 1 spare hypervisor(s) ready"),
            PoolHost("cli-held", phase="BAREMETAL", hold="baremetal", state="maintenance"),
        ],
    )


@pytest.fixture
def pool(cloud: Cloud, hosts: dict[str, str]) -> Iterator[dict[str, str]]:
    """The pool hosts, and an Ironic for the API to see during the test."""
    with with_ironic(cloud.runtime):
        yield hosts


def lines(text: str) -> dict[str, list[str]]:
    """Table rows by their first cell."""
    return {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.strip()}


def test_host_list_shows_source_and_role(admin_cli: Cli, pool: dict[str, str]) -> None:
    res = admin_cli("host", "list")
    assert res.exit_code == 0, res.output
    rows = lines(res.stdout)
    assert rows["NAME"][:4] == ["NAME", "STATE", "SOURCE", "ROLE"]
    assert rows["cli-a"][1:4] == ["up", "inventory", "-"]
    assert rows["cli-hv"][1:4] == ["up", "ironic", "HYPERVISOR"]
    assert rows["cli-held"][1:4] == ["maintenance", "ironic", "BAREMETAL"]


def test_host_pool_shows_the_table_and_json(admin_cli: Cli, pool: dict[str, str]) -> None:
    res = admin_cli("host", "pool")
    assert res.exit_code == 0, res.output
    rows = lines(res.stdout)
    assert rows["NAME"] == [
        "NAME",
        "NODE",
        "STATE",
        "ROLE",
        "HOLD",
        "SERVERS",
        "NEEDS",
        "REASON",
    ]
    assert "cli-a" not in rows
    assert rows["cli-bm"] == ["cli-bm", pool["cli-bm"], "up", "BAREMETAL", "-", "0", "-", "-"]
    assert rows["cli-held"][1:5] == [pool["cli-held"], "maintenance", "BAREMETAL", "baremetal"]
    assert " ".join(rows["cli-hv"]).endswith("HYPERVISOR - 0 - keep 1 spare hypervisor(s) ready")
    res = admin_cli("host", "pool", "-o", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [r["name"] for r in doc] == ["cli-bm", "cli-held", "cli-hv"]
    assert doc[0]["vm_need"] == "" and doc[0]["node_id"] == pool["cli-bm"]


def test_convert_drain_and_events(admin_cli: Cli, pool: dict[str, str]) -> None:
    res = admin_cli("host", "convert", "cli-bm", "--to", "hypervisor")
    assert res.exit_code == 0, res.output
    assert lines(res.stdout)["cli-bm"][1:4] == ["up", "ironic", "TO_HYPERVISOR"]
    res = admin_cli("host", "pool")
    assert lines(res.stdout)["cli-bm"][3:5] == ["TO_HYPERVISOR", "hypervisor"]

    res = admin_cli("host", "drain", "cli-hv")
    assert res.exit_code == 0, res.output
    assert lines(res.stdout)["cli-hv"][3] == "DRAINING"

    res = admin_cli("host", "events", "cli-bm")
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "BAREMETAL" in text and "TO_HYPERVISOR" in text
    assert "joined the pool as baremetal" in text and "asked by operator admin" in text
    res = admin_cli("host", "events", "cli-bm", "-o", "json")
    assert [e["to_phase"] for e in json.loads(res.stdout)] == ["BAREMETAL", "TO_HYPERVISOR"]


def test_refusals_exit_with_their_codes_and_say_why(admin_cli: Cli, pool: dict[str, str]) -> None:
    res = admin_cli("host", "drain", "cli-held")
    assert res.exit_code == 4, res.output  # a conflict
    assert "host 'cli-held' is BAREMETAL, not a hypervisor: nothing to drain" in res.stderr
    res = admin_cli("host", "convert", "nope", "--to", "auto")
    assert res.exit_code == 3 and "no host 'nope'" in res.stderr
    res = admin_cli("host", "convert", "cli-a", "--to", "hypervisor")
    assert res.exit_code == 1 and "is not in the bare-metal-or-hypervisor pool" in res.stderr
    res = admin_cli("host", "convert", "cli-bm", "--to", "sideways")
    assert res.exit_code == 2  # typer's usage error: the choices are listed
    assert "hypervisor" in res.output and "baremetal" in res.output


def test_without_ironic_the_pool_commands_say_how_to_configure_it(
    admin_cli: Cli, cloud: Cloud
) -> None:
    assert cloud.runtime.ctx.ironic is None
    res = admin_cli("host", "pool")
    assert res.exit_code == 4, res.output
    assert "set ECLIPTIC_IRONIC_URL" in res.stderr


def test_help_says_what_each_command_does(cli: Cli) -> None:
    res = cli("host", "--help")
    assert res.exit_code == 0
    for name in ("pool", "convert", "drain", "events"):
        assert name in res.stdout
    res = cli("host", "convert", "--help")
    assert "held until --to auto" in " ".join(res.stdout.split())


def test_the_client_speaks_the_api_s_models(cloud: Cloud, pool: dict[str, str]) -> None:
    with cloud.admin() as c:
        rows = {r.name: r for r in c.hosts.pool()}
        assert rows["cli-held"].hold == "baremetal" and rows["cli-held"].node_id == pool["cli-held"]
        with pytest.raises(ApiError) as err:
            c.hosts.convert("cli-bm", "sideways")  # type: ignore[arg-type]
        assert err.value.status == 422 and err.value.errors[0].field == "to"
        h = c.hosts.convert("cli-bm", "auto")
        assert h.source == "ironic" and h.pool is not None and h.pool.hold == ""
        assert c.hosts.events("cli-bm")[0].to_phase == "BAREMETAL"
        with pytest.raises(ApiError) as err:
            c.hosts.drain("nope")
        assert err.value.status == 404 and err.value.code == "not_found"
