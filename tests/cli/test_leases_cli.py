"""``ecliptic lease``, ``calendar`` and ``credits`` against a real API and local cloud.

The inventory (``tests/cli/conftest.py``) has two hosts: ``cli-a`` (8 vCPU, no GPU) and
``cli-gpu`` (2 A100). The first start gives tenancy ``default`` a ``starter`` allocation
for every resource class of it: ``host:cpu``, ``host:A100``, ``gpu:A100`` and ``vcpu``.
Every test books under its own lease names and ends what it booked.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from ecliptic.cli.leases import ReservationOptions, reservations
from ecliptic.client import FindRequest, FlavorReservationIn, LeaseCreate, LeaseUpdate
from tests.cli.conftest import Cli, Cloud

A100 = 'gpu_model == "A100"'


def _ledger(cli: Cli) -> list[dict[str, object]]:
    res = cli("credits", "ledger", "-o", "json")
    assert res.exit_code == 0, res.output
    rows: list[dict[str, object]] = json.loads(res.stdout)
    return rows


def _unboxed(text: str) -> str:
    """Click's error as one line, without Rich's box and wrapping."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def _end(cli: Cli, *names: str) -> None:
    for name in names:
        res = cli("lease", "delete", name)
        assert res.exit_code in (0, 3), res.output


def test_credits_show_lists_the_starter_allocation(admin_cli: Cli) -> None:
    res = admin_cli("credits", "show")
    assert res.exit_code == 0, res.output
    assert "starter" in res.stdout and "A100 GPU-hours" in res.stdout
    res = admin_cli("credits", "show", "-o", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    starter = {r["resource_class"]: r for r in rows if r["allocation"] == "starter"}
    assert {"vcpu", "gpu:A100", "host:A100", "host:cpu"} <= set(starter)
    assert Decimal(starter["gpu:A100"]["granted"]) > 0
    assert set(rows[0]) >= {"granted", "charged", "refunded", "remaining", "start", "end"}


def test_lease_create_list_show_update_ledger_and_delete_refunds(admin_cli: Cli) -> None:
    res = admin_cli(
        "lease", "create", "gpus", "--hosts", "1", "--where", A100, "--duration", "2h",
        "--grace", "0m",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "cli-gpu" in res.stdout and "2 'A100' host credits" in res.stdout
    try:
        res = admin_cli("lease", "list")
        assert res.exit_code == 0, res.output
        assert "gpus" in res.stdout and "1 host where" in res.stdout

        res = admin_cli("lease", "list", "-o", "json")
        assert res.exit_code == 0, res.output
        assert "gpus" in {x["name"] for x in json.loads(res.stdout)}

        res = admin_cli("lease", "show", "gpus", "-o", "json")
        assert res.exit_code == 0, res.output
        lease = json.loads(res.stdout)
        assert lease["name"] == "gpus" and lease["cost"] == {"host:A100": "2"}
        (hosts,) = lease["reservations"]
        assert hosts["name"] == "hosts" and hosts["kind"] == "host"
        assert [a["host"] for a in hosts["allocations"]] == ["cli-gpu"]

        res = admin_cli("lease", "show", "gpus")
        assert res.exit_code == 0, res.output
        for text in ("phase", "cli-gpu", "RESERVATION", "'A100' host credits"):
            assert text in res.stdout

        charges = [
            e for e in _ledger(admin_cli) if e["kind"] == "charge" and "'gpus'" in str(e["note"])
        ]
        assert [(e["resource_class"], e["hours"]) for e in charges] == [("host:A100", "-2")]
        res = admin_cli("credits", "ledger")
        assert res.exit_code == 0 and "charge" in res.stdout and "-2" in res.stdout

        res = admin_cli("lease", "update", "gpus", "--extend", "1h")
        assert res.exit_code == 0, res.output
        assert "charged 1 'A100' host credits" in res.stderr
        res = admin_cli("lease", "show", "gpus", "-o", "json")
        assert json.loads(res.stdout)["cost"] == {"host:A100": "3"}

        res = admin_cli("lease", "events", "gpus")
        assert res.exit_code == 0 and "booked" in res.stdout

        res = admin_cli("lease", "retry", "gpus")
        assert res.exit_code != 0 and "only a lease in ERROR" in _unboxed(res.output)
    finally:
        res = admin_cli("lease", "delete", "gpus")
    assert res.exit_code == 0, res.output
    assert "lease gpus:" in res.stdout and "refunded" in res.stdout

    refunds = [
        e for e in _ledger(admin_cli) if e["kind"] == "refund" and "'gpus'" in str(e["note"])
    ]
    assert refunds and all(e["resource_class"] == "host:A100" for e in refunds)
    assert sum(Decimal(str(e["hours"])) for e in refunds) > 0
    res = admin_cli("credits", "show", "-o", "json")
    (a100,) = [
        r
        for r in json.loads(res.stdout)
        if r["allocation"] == "starter" and r["resource_class"] == "host:A100"
    ]
    assert Decimal(a100["refunded"]) > 0

    res = admin_cli("lease", "list", "--ended", "-o", "json")
    assert "gpus" in {x["name"] for x in json.loads(res.stdout)}


def test_servers_inside_a_lease_go_when_it_ends(admin_cli: Cli, cloud: Cloud) -> None:
    res = admin_cli(
        "lease", "create", "runs", "--flavor", "m1.tiny", "--duration", "1h", "--grace", "0m",
        "--wait", "--timeout", "60", "-o", "json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lease = json.loads(res.stdout)
    assert lease["phase"] == "ACTIVE"
    res = admin_cli("lease", "show", "runs", "--wait", "--timeout", "10")
    assert res.exit_code == 0 and "ACTIVE" in res.stdout

    res = admin_cli(
        "server", "create", "in-lease", "--flavor", "m1.tiny", "--lease", "runs",
        "--reservation", "slots", "-o", "json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    srv = json.loads(res.stdout)
    assert srv["lease_id"] == lease["id"] and srv["reservation"] == "slots"
    assert not srv["preemptible"]
    res = admin_cli("server", "show", "in-lease")
    assert f"in lease {lease['id']}, reservation slots" in res.stdout

    res = admin_cli("server", "create", "spare", "--flavor", "m1.tiny", "--preemptible")
    assert res.exit_code == 0, res.output
    assert "preemptible: stopped when a lease needs its room" in res.stdout
    res = admin_cli(
        "server", "create", "both", "--flavor", "m1.tiny", "--lease", "runs", "--preemptible"
    )
    assert res.exit_code == 2 and "not both" in _unboxed(res.output)

    res = admin_cli("lease", "update", "runs", "--shorten", "100d")
    assert res.exit_code != 0 and "ecliptic lease end runs" in _unboxed(res.output)
    res = admin_cli("lease", "update", "runs", "--before-end", "10m", "-o", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["servers"] == 1
    res = admin_cli("lease", "end", "runs")
    assert res.exit_code == 0, res.output
    assert "its 1 server goes after the grace period (0m)" in res.stdout
    assert "unused credit refunded" in res.stdout
    with cloud.admin() as admin:
        admin.servers.wait_deleted("in-lease", timeout=60)
        admin.servers.delete("spare")
        admin.servers.wait_deleted("spare", timeout=60)
    res = admin_cli("server", "list", "--deleted")
    assert res.exit_code == 0, res.output
    line = next(x for x in res.stdout.splitlines() if "in-lease" in x)
    assert "lease 'runs' ended" in line
    res = admin_cli("server", "events", "in-lease")
    assert res.exit_code == 0 and "DELETED" in res.stdout


def test_lease_from_a_yaml_file(admin_cli: Cli, tmp_path: Path) -> None:
    body = tmp_path / "lease.yaml"
    body.write_text(
        "name: from-file\nduration: 1h\ngrace: 0m\n"
        "reservations:\n  - {kind: flavor, flavor: m1.tiny, count: 2}\n"
    )
    res = admin_cli("lease", "create", "--file", str(body), "-o", "json")
    assert res.exit_code == 0, res.output
    try:
        lease = json.loads(res.stdout)
        assert lease["name"] == "from-file"
        (slots,) = lease["reservations"]
        assert slots["name"] == "slots" and sum(a["slots"] for a in slots["allocations"]) == 2
        assert set(lease["cost"]) == {"vcpu"}
    finally:
        _end(admin_cli, "from-file")


def test_find_prints_the_earliest_window(admin_cli: Cli) -> None:
    res = admin_cli(
        "lease", "find", "--hosts", "1", "--where", A100, "--duration", "48h",
        "--alternatives", "1",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "START" in res.stdout and "cli-gpu" in res.stdout
    assert "48 'A100' host credits" in res.stdout  # one host for 48 hours
    res = admin_cli(
        "lease", "find", "--flavor", "m1.tiny", "--count", "2", "--duration", "1h", "-o", "json"
    )
    assert res.exit_code == 0, res.output
    windows = json.loads(res.stdout)
    assert windows and set(windows[0]) == {"start", "end", "hosts", "cost"}
    assert set(windows[0]["hosts"]) == {"slots"}


def test_find_with_nothing_in_the_horizon_exits_1(admin_cli: Cli) -> None:
    res = admin_cli("lease", "find", "--hosts", "3", "--duration", "1h", "--horizon", "2d")
    assert res.exit_code == 1, res.output
    assert "nothing fits within the next 2d" in res.stderr
    assert res.stdout == ""


def test_bad_where_exits_1_and_points_at_the_filter(admin_cli: Cli) -> None:
    res = admin_cli(
        "lease", "create", "bad", "--hosts", "1", "--where", "gpu_model ==", "--duration", "1h"
    )
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: invalid input")
    assert "where" in res.stderr and "Traceback" not in res.output
    res = admin_cli("lease", "find", "--hosts", "1", "--where", "(rdma", "--duration", "1h")
    assert res.exit_code == 1 and "where" in res.stderr


def test_lease_too_big_exits_4(admin_cli: Cli) -> None:
    res = admin_cli("lease", "create", "huge", "--hosts", "3", "--duration", "1h")
    assert res.exit_code == 4, res.output
    assert res.stderr.startswith("error: ") and "lease find" in res.stderr
    res = admin_cli("lease", "show", "huge")
    assert res.exit_code == 3


def test_insufficient_credits_exit_5_with_the_apis_words(admin_cli: Cli, cloud: Cloud) -> None:
    with cloud.admin(tenancy=None) as admin:
        admin.tenancies.create("poor")
        admin.members.set("poor", "admin", "admin")
        try:
            res = admin_cli(
                "--tenancy", "poor", "lease", "create", "nope", "--flavor", "m1.tiny",
                "--duration", "2h",
            )  # fmt: skip
            assert res.exit_code == 5, res.output
            assert res.stderr.startswith(
                "error: needs 2 vCPU-hours, but this tenancy has no allocation"
            )

            res = admin_cli(
                "credits", "allocate", "poor", "small", "--hours", "vcpu=1.5", "--end", "+30d"
            )
            assert res.exit_code == 0, res.output
            assert "small" in res.stdout and "1.5" in res.stdout
            res = admin_cli(
                "--tenancy", "poor", "lease", "create", "nope", "--flavor", "m1.tiny",
                "--duration", "2h",
            )  # fmt: skip
            assert res.exit_code == 5, res.output
            assert res.stderr == "error: needs 2 vCPU-hours, 1.5 left in allocation 'small'\n"
        finally:
            # Back to one tenancy, so that later logins pick 'default' again.
            admin.members.remove("poor", "admin")


def test_allocate_wants_class_equals_hours(admin_cli: Cli) -> None:
    res = admin_cli("credits", "allocate", "default", "x", "--hours", "vcpu", "--end", "+1d")
    assert res.exit_code == 2 and "write CLASS=HOURS" in _unboxed(res.output)


def test_calendar_fits_the_screen_and_json_is_the_apis(admin_cli: Cli) -> None:
    res = admin_cli("calendar", "--days", "7", "--bucket", "12h")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()  # two header lines: days, then hours
    assert lines[1].startswith("RESOURCE") and "TOTAL" in lines[1] and "h" in lines[1]
    assert len(lines[1].split()) == 2 + 14  # RESOURCE TOTAL and 14 buckets of 12 hours
    assert any(line.startswith("gpu:A100") for line in lines)
    assert max(len(line) for line in lines) <= 100
    res = admin_cli("calendar", "--days", "1", "--bucket", "6h", "-o", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows and all(len(r["buckets"]) == 4 for r in rows)
    assert set(rows[0]["buckets"][0]) == {"start", "total", "reserved", "free"}
    res = admin_cli("calendar", "--bucket", "soon")
    assert res.exit_code == 2 and "not a duration" in _unboxed(res.output)


def test_usage_errors_exit_2(admin_cli: Cli) -> None:
    for args, text in [
        (["lease", "create", "x", "--hosts", "1"], "--duration"),
        (["lease", "create", "x", "--duration", "1h"], "--hosts N"),
        (["lease", "create", "x", "--hosts", "two", "--duration", "1h"], "a range (2-4)"),
        (["lease", "create", "x", "--hosts", "1", "--count", "2", "--duration", "1h"], "--count"),
        (["lease", "create", "x", "--hosts", "1", "--end", "+1h", "--duration", "1h"], "not both"),
        (["lease", "update", "x"], "say what to change"),
        (["server", "create", "x", "--flavor", "m1.tiny", "--reservation", "r"], "--lease"),
    ]:
        res = admin_cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert text in _unboxed(res.output), (args, res.output)


def test_client_takes_the_request_models(cloud: Cloud) -> None:
    slots = FlavorReservationIn(kind="flavor", flavor="m1.tiny", count=1)
    with cloud.admin() as c:
        (first, *_) = c.availability.earliest(FindRequest(reservations=[slots], duration="1h"))
        assert set(first.hosts) == {"slots"} and first.cost == {"vcpu": "1"}
        lease = c.leases.create(
            LeaseCreate(name="by-model", duration="1h", grace="0m", reservations=[slots])
        )
        try:
            assert lease.cost == {"vcpu": "1"}
            lease = c.leases.update("by-model", LeaseUpdate(extend="1h"))
            assert lease.cost == {"vcpu": "2"} and "by-model" in {x.name for x in c.leases.list()}
            assert [e.kind for e in c.credits.ledger(limit=1)] == ["charge"]
            with pytest.raises(TypeError):
                c.leases.update("by-model", LeaseUpdate(extend="1h"), shorten="1h")
        finally:
            assert c.leases.delete("by-model").phase in ("ENDING", "ENDED")
        rows = c.availability.calendar(days=1, bucket="12h")
        assert rows and all(len(r.buckets) == 2 for r in rows)


# -- the reservation options alone ----------------------------------------------------------


def test_reservation_options_make_one_reservation_of_each_kind() -> None:
    opts = ReservationOptions(
        hosts="2-4", where="rdma", flavor="m1.large:4", gpu_slice="1g.10gb", count=3,
        anti_affinity=True,
    )  # fmt: skip
    assert reservations(opts) == [
        {"kind": "host", "name": "hosts", "min": 2, "max": 4, "where": "rdma"},
        {
            "kind": "flavor",
            "name": "slots",
            "flavor": "m1.large",
            "affinity": "anti-affinity",
            "count": 4,
        },
        {"kind": "gpu_slice", "name": "slices", "profile": "1g.10gb", "count": 3},
    ]
    only = reservations(ReservationOptions(gpu_slice="1g.10gb", count=2, where='rack == "r1"'))
    assert only == [
        {"kind": "gpu_slice", "name": "slices", "profile": "1g.10gb", "count": 2,
         "where": 'rack == "r1"'},
    ]  # fmt: skip


@pytest.mark.parametrize(
    "opts",
    [
        ReservationOptions(),
        ReservationOptions(flavor="m1.tiny", gpu_slice="1g.10gb", count=2),
        ReservationOptions(flavor="m1.tiny", gpu_slice="1g.10gb", where="rdma"),
        ReservationOptions(hosts="1", affinity=True),
        ReservationOptions(flavor="m1.tiny", affinity=True, anti_affinity=True),
    ],
)
def test_ambiguous_reservation_options_are_refused(opts: ReservationOptions) -> None:
    import typer

    with pytest.raises(typer.BadParameter):
        reservations(opts)
