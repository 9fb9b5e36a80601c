"""The ``ecliptic`` command line against a real API and local cloud: what a user would notice."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ecliptic.backends.base import ServerSpec
from ecliptic.client import Client
from tests.cli.conftest import ADMIN_PASSWORD, Cli, Cloud, closed_port


def _creds(config: Path, profile: str | None = None) -> Path:
    name = "credentials.json" if profile is None else f"credentials-{profile}.json"
    return config / "ecliptic" / name


def test_login_saves_private_credentials_that_later_commands_use(cli: Cli, cli_env: Path) -> None:
    res = cli.login()
    assert f"Signed in to {cli.url} as admin in tenancy default" in res.stdout
    path = _creds(cli_env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["url"] == cli.url and saved["user"] == "admin"
    assert saved["tenancy"] == "default" and saved["token"].startswith("ecl_")

    res = cli("whoami", "-o", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["user"] == "admin"
    res = cli("flavor", "list")
    assert res.exit_code == 0 and "m1.tiny" in res.stdout and "512 MiB" in res.stdout


def test_wrong_password_exits_5_and_saves_nothing(cli: Cli, cli_env: Path) -> None:
    res = cli("login", "--url", cli.url, "--user", "admin", "--password-stdin", input="nope\n")
    assert res.exit_code == 5
    assert res.stderr == "error: wrong user name or password\n"
    assert res.stdout == ""
    assert not _creds(cli_env).exists()


def test_not_signed_in_exits_5_and_says_how_to_sign_in(cli: Cli) -> None:
    res = cli("--url", cli.url, "server", "list")
    assert res.exit_code == 5
    assert "error: sign in first" in res.stderr and "ecliptic login" in res.stderr


def test_unknown_flavor_exits_1_and_names_it(admin_cli: Cli) -> None:
    res = admin_cli("server", "create", "nope-1", "--flavor", "m9.huge")
    assert res.exit_code == 1
    assert "error: no flavor 'm9.huge'" in res.stderr and "m1.tiny" in res.stderr
    assert "Traceback" not in res.output


def test_invalid_name_lists_the_field(admin_cli: Cli) -> None:
    res = admin_cli("network", "create", "Bad_Name")
    assert res.exit_code == 1
    assert res.stderr.startswith("error: invalid input\n  name: 'Bad_Name' is not a valid name")


def test_usage_error_exits_2(admin_cli: Cli) -> None:
    res = admin_cli("server", "create", "x")
    assert res.exit_code == 2 and "--flavor" in res.output
    res = admin_cli("server", "create", "x", "--flavor", "m1.tiny", "--direct-port")
    assert res.exit_code == 2 and "give at least one --network" in res.output


def test_json_output_is_one_document_wherever_the_option_goes(admin_cli: Cli) -> None:
    for args in (["-o", "json", "flavor", "list"], ["flavor", "list", "--output", "json"]):
        res = admin_cli(*args)
        assert res.exit_code == 0, res.output
        flavors = json.loads(res.stdout)
        assert "m1.tiny" in {f["name"] for f in flavors}
        assert set(flavors[0]) >= {"id", "name", "vcpus", "memory_mb", "gpus", "kind"}
    res = admin_cli("server", "list", "-o", "json")
    assert json.loads(res.stdout) == {"items": [], "next": None}


def test_json_output_prints_errors_as_problem_documents(admin_cli: Cli) -> None:
    res = admin_cli("-o", "json", "server", "show", "no-such-server")
    assert res.exit_code == 3
    doc = json.loads(res.stderr)
    assert doc["code"] == "not_found" and doc["status"] == 404
    assert "no server 'no-such-server'" in doc["detail"]
    res = admin_cli("network", "create", "Bad_Name", "--output", "json")
    assert res.exit_code == 1
    doc = json.loads(res.stderr)
    assert doc["status"] == 422 and doc["errors"][0]["field"] == "name"
    assert res.stdout == ""


def test_not_found_exits_3(admin_cli: Cli) -> None:
    res = admin_cli("server", "show", "no-such-server")
    assert res.exit_code == 3
    assert res.stderr.startswith("error: no server 'no-such-server' in this tenancy")
    res = admin_cli("--tenancy", "no-such-tenancy", "network", "list")
    assert res.exit_code == 3 and "not a member of a tenancy 'no-such-tenancy'" in res.stderr


def test_unreachable_api_exits_6(cli: Cli) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    res = cli("--url", url, "whoami")
    assert res.exit_code == 6
    assert f"error: cannot reach Ecliptic at {url}: is `ecliptic serve` running?" in res.stderr


def test_network_lifecycle_and_conflict(admin_cli: Cli) -> None:
    res = admin_cli("network", "create", "cli-net", "--cidr", "198.18.200.0/24", "--wait")
    assert res.exit_code == 0, res.output
    assert "ACTIVE" in res.stdout and "198.18.200.1" in res.stdout
    res = admin_cli("network", "create", "cli-net")
    assert res.exit_code == 4 and "exists already" in res.stderr
    res = admin_cli("-o", "json", "network", "list")
    assert "cli-net" in {n["name"] for n in json.loads(res.stdout)}

    res = admin_cli("port", "create", "--network", "cli-net", "--name", "cli-port", "--direct")
    assert res.exit_code == 0 and "198.18.200.2" in res.stdout and "direct" in res.stdout
    res = admin_cli("network", "delete", "cli-net")
    assert res.exit_code == 4 and "in use by 1 unattached port" in res.stderr
    assert admin_cli("port", "delete", "cli-port").exit_code == 0

    res = admin_cli("network", "delete", "cli-net", "--wait")
    assert res.exit_code == 0 and "network cli-net: deleted" in res.stdout
    assert admin_cli("network", "show", "cli-net").exit_code == 3


def test_server_create_wait_exec_and_delete(admin_cli: Cli) -> None:
    res = admin_cli("server", "create", "cli-one", "--flavor", "m1.tiny", "--wait")
    assert res.exit_code == 0, res.output
    assert "ACTIVE" in res.stdout and "eth0" in res.stdout and "default" in res.stdout

    res = admin_cli("server", "exec", "cli-one", "--", "hostname")
    assert (res.exit_code, res.stdout) == (0, "cli-one\n")
    res = admin_cli("server", "exec", "cli-one", "--", "sh", "-c", "echo oops >&2; exit 7")
    assert (res.exit_code, res.stdout, res.stderr) == (7, "", "oops\n")
    res = admin_cli("server", "exec", "cli-one", "--", "tr", "a-z", "A-Z", input="hello\n")
    assert (res.exit_code, res.stdout) == (0, "HELLO\n")
    res = admin_cli("server", "exec", "cli-one", "--timeout", "0.5", "--", "sleep", "5")
    assert res.exit_code == 124 and "timed out after 0.5 s" in res.stderr
    res = admin_cli("-o", "json", "server", "exec", "cli-one", "--", "sh", "-c", "exit 3")
    assert res.exit_code == 3 and json.loads(res.stdout)["exit_code"] == 3
    # More memory than the flavor's 512 MiB: the kernel kills it, and the user is told why.
    hog = "b = bytearray(768 * 1024 * 1024); print(len(b))"
    res = admin_cli("server", "exec", "cli-one", "--", "python3", "-c", hog)
    assert res.exit_code == 137, res.output
    assert "killed: out of memory (flavor limit 512 MiB)" in res.stderr
    res = admin_cli("server", "exec", "cli-one", "--", "sh", "-c", "kill -9 $$")
    assert res.exit_code == 137 and "out of memory" not in res.stderr

    res = admin_cli("server", "events", "cli-one")
    assert res.exit_code == 0 and "ACTIVE" in res.stdout

    res = admin_cli("server", "delete", "cli-one", "--wait")
    assert res.exit_code == 0 and "server cli-one: deleted" in res.stdout
    assert admin_cli("server", "show", "cli-one").exit_code == 3


def test_server_log_prints_the_console_log(admin_cli: Cli, cloud: Cloud) -> None:
    res = admin_cli("server", "create", "cli-log", "--flavor", "m1.tiny", "--wait")
    assert res.exit_code == 0, res.output
    srv = cloud.admin().servers.get("cli-log")
    console = Path(cloud.runtime.settings.data_dir) / "local" / "servers" / srv.id / "console.log"
    text = console.read_text()
    assert f"network namespace ecl-{srv.id[:10]} created on host" in text
    assert "eth0" in text
    res = admin_cli("server", "log", "cli-log")
    assert (res.exit_code, res.stdout, res.stderr) == (0, text, ""), res.output
    # --tail: exactly the last bytes (here all of one line's end and its newline).
    res = admin_cli("server", "log", "cli-log", "--tail", "20")
    assert (res.exit_code, res.stdout) == (0, text[-20:]), res.output
    res = admin_cli("-o", "json", "server", "log", "cli-log")
    assert res.exit_code == 0 and json.loads(res.stdout)["log"] == text, res.output
    res = admin_cli("server", "log", "no-such-server")
    assert res.exit_code == 3 and res.stdout == "" and "no server 'no-such-server'" in res.stderr
    assert admin_cli("server", "delete", "cli-log", "--wait").exit_code == 0


def test_direct_port_and_several_networks(admin_cli: Cli) -> None:
    assert admin_cli("network", "create", "cli-data", "--wait").exit_code == 0
    res = admin_cli(
        "-o",
        "json",
        "server",
        "create",
        "cli-two",
        "--flavor",
        "m1.tiny",
        "--network",
        "default",
        "--network",
        "cli-data:direct",
        "--wait",
    )
    assert res.exit_code == 0, res.output
    srv = json.loads(res.stdout)
    assert srv["phase"] == "ACTIVE"
    assert [p["vnic_type"] for p in sorted(srv["ports"], key=lambda p: p["device_index"])] == [
        "normal",
        "direct",
    ]
    res = admin_cli("server", "exec", "cli-two", "--", "ip", "-o", "link")
    assert res.exit_code == 0 and "eth1" in res.stdout
    res = admin_cli("server", "delete", "cli-two", "--wait")
    assert res.exit_code == 0, res.output
    assert admin_cli("network", "delete", "cli-data", "--wait").exit_code == 0


def test_wait_that_runs_out_exits_7_and_delete_cleans_up(admin_cli: Cli) -> None:
    res = admin_cli(
        "server", "create", "cli-slow", "--flavor", "m1.tiny", "--wait", "--timeout", "0.001"
    )
    assert res.exit_code == 7
    assert re.search(
        r"error: server 'cli-slow' is still (PENDING|BUILDING) after 0.001 s", res.stderr
    )
    res = admin_cli("server", "delete", "cli-slow", "no-such-server", "--wait")
    assert res.exit_code == 3  # the first failure decides, the others still happen
    assert "server cli-slow: deleted" in res.stdout and "no server 'no-such-server'" in res.stderr


def test_list_pages_and_filters(admin_cli: Cli) -> None:
    for i in range(3):
        assert admin_cli("server", "create", f"cli-page-{i}", "--flavor", "m1.tiny").exit_code == 0
    res = admin_cli("server", "list", "--name", "cli-page", "--limit", "2")
    assert res.exit_code == 0 and "cli-page-1" in res.stdout and "cli-page-2" not in res.stdout
    assert "more servers exist" in res.stderr
    page = json.loads(admin_cli("-o", "json", "server", "list", "--limit", "2").stdout)
    assert len(page["items"]) == 2 and page["next"]
    res = admin_cli("-o", "json", "server", "list", "--name", "cli-page", "--limit", "1", "--all")
    names = [s["name"] for s in json.loads(res.stdout)["items"]]
    assert names == ["cli-page-0", "cli-page-1", "cli-page-2"]
    res = admin_cli("server", "delete", "cli-page-0", "cli-page-1", "cli-page-2", "--wait")
    assert res.exit_code == 0, res.output


def test_gpus_on_demand_are_refused_with_how_to_reserve_them(admin_cli: Cli) -> None:
    res = admin_cli("server", "create", "cli-big", "--flavor", "g1.h100")
    assert res.exit_code == 4, res.output
    assert "flavor 'g1.h100' runs only on reserved capacity" in res.stderr
    assert "ecliptic lease create NAME --flavor g1.h100" in res.stderr


def test_hosts_show_use_and_state(admin_cli: Cli) -> None:
    res = admin_cli("host", "list")
    assert res.exit_code == 0
    assert "cli-gpu" in res.stdout and "0/2 A100" in res.stdout and "/16 GiB" in res.stdout
    res = admin_cli("host", "set-state", "cli-gpu", "maintenance")
    assert res.exit_code == 0 and "maintenance" in res.stdout
    res = admin_cli("server", "create", "cli-gpu-1", "--flavor", "g1.a100")
    assert res.exit_code == 4
    assert admin_cli("host", "set-state", "cli-gpu", "up").exit_code == 0
    assert admin_cli("host", "set-state", "cli-gpu", "sideways").exit_code == 2


def test_members_and_roles(admin_cli: Cli, cloud: Cloud) -> None:
    res = admin_cli("user", "create", "cli-alice", "--password-stdin", input="alice-secret-1\n")
    assert res.exit_code == 0, res.output
    assert admin_cli("tenancy", "create", "cli-lab").exit_code == 0
    assert admin_cli("tenancy", "member-add", "cli-lab", "cli-alice").exit_code == 0
    res = admin_cli("-o", "json", "tenancy", "members", "cli-lab")
    assert {"tenancy": "cli-lab", "user": "cli-alice", "role": "member"} in json.loads(res.stdout)

    alice = Cli(cloud.url)
    res = alice(
        "--profile",
        "alice",
        "login",
        "--url",
        cloud.url,
        "--user",
        "cli-alice",
        "--password-stdin",
        input="alice-secret-1",
    )
    assert res.exit_code == 0, res.output
    res = alice("whoami", "-o", "json", "--profile", "alice")
    assert json.loads(res.stdout)["tenancy"] == "cli-lab"
    res = alice("--profile", "alice", "host", "list")
    assert res.exit_code == 5 and "only administrators" in res.stderr
    assert alice("--profile", "alice", "server", "list").exit_code == 0
    res = admin_cli("whoami", "-o", "json")
    assert json.loads(res.stdout)["user"] == "admin"  # the default profile is untouched

    assert admin_cli("tenancy", "member-remove", "cli-lab", "cli-alice").exit_code == 0
    assert alice("--profile", "alice", "server", "list").exit_code == 3
    assert admin_cli("tenancy", "delete", "cli-lab").exit_code == 0


def test_tokens_and_logout_revokes(admin_cli: Cli, cli_env: Path, cloud: Cloud) -> None:
    res = admin_cli("-o", "json", "token", "create", "cli-ci")
    assert res.exit_code == 0
    made = json.loads(res.stdout)
    assert made["secret"].startswith("ecl_")
    res = admin_cli("token", "list")
    assert "cli-ci" in res.stdout and "(this one)" in res.stdout
    assert admin_cli("token", "revoke", made["id"]).exit_code == 0

    saved = json.loads(_creds(cli_env).read_text())
    res = admin_cli("logout")
    assert res.exit_code == 0 and not _creds(cli_env).exists()
    with Client(cloud.url, token=saved["token"]) as c:
        try:
            c.whoami()
        except Exception as exc:
            assert getattr(exc, "status", None) == 401
        else:
            raise AssertionError("the token still works after logout")
    assert admin_cli("--url", cloud.url, "whoami").exit_code == 5


def test_local_status_lists_what_the_backend_holds(admin_cli: Cli) -> None:
    assert admin_cli("server", "create", "cli-seen", "--flavor", "m1.tiny", "--wait").exit_code == 0
    res = admin_cli("-o", "json", "local", "status")
    assert res.exit_code == 0
    st = json.loads(res.stdout)
    assert st["backend"] == "local" and st["orphans"] == 0
    assert any(r["kind"] == "server" and r["known"] for r in st["resources"])
    res = admin_cli("local", "gc")
    assert res.exit_code == 0 and "nothing to remove" in res.stderr
    assert admin_cli("server", "delete", "cli-seen", "--wait").exit_code == 0


def test_local_gc_removes_orphans_only_and_says_what(admin_cli: Cli, cloud: Cloud) -> None:
    """A namespace this instance made for a server the store does not know is an orphan."""
    assert admin_cli("server", "create", "cli-kept", "--flavor", "m1.tiny", "--wait").exit_code == 0
    kept = cloud.admin().servers.get("cli-kept")
    orphan_id = uuid.uuid4().hex
    orphan_ns = f"ecl-{orphan_id[:10]}"
    cloud.runtime.backend.ensure_server(
        ServerSpec(orphan_id, "cli-orphan", "vm", "cli-a", vcpus=1, memory_mb=256)
    )
    try:
        assert orphan_ns in _netns()
        # Owner records younger than a margin count as known (a commit may be under way):
        # age the orphan's records rather than wait.
        owners = Path(os.environ["ECLIPTIC_OWNERS_DIR"])
        old = time.time() - 60
        for rec in owners.iterdir():
            if orphan_id in rec.read_text():
                os.utime(rec, (old, old))
        res = admin_cli("local", "status")
        assert res.exit_code == 0, res.output
        # The orphan server, and its init process.
        assert "2 orphan(s): remove them with 'ecliptic local gc'" in res.stderr
        row = next(line for line in res.stdout.splitlines() if orphan_ns in line)
        assert "ORPHAN" in row and orphan_id[:8] in row
        res = admin_cli("-o", "json", "local", "gc")
        assert res.exit_code == 0, res.output
        removed = json.loads(res.stdout)["removed"]
        kinds = sorted((r["kind"], r["name"].split("/")[0]) for r in removed)
        assert kinds == [("process", "init"), ("server", orphan_ns)], removed
        assert all(r["object_id"] == orphan_id for r in removed if r["kind"] == "server")
        assert orphan_ns not in _netns()
        # What is known stays, and works.
        assert f"ecl-{kept.id[:10]}" in _netns()
        res = admin_cli("server", "exec", "cli-kept", "--", "hostname")
        assert (res.exit_code, res.stdout) == (0, "cli-kept\n")
        res = admin_cli("local", "gc")
        assert res.exit_code == 0 and "nothing to remove" in res.stderr
    finally:
        cloud.runtime.backend.delete_server(orphan_id)
        assert admin_cli("server", "delete", "cli-kept", "--wait").exit_code == 0


def _netns() -> set[str]:
    out = subprocess.run(["ip", "-o", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


INSTALLED = [sys.executable, "-m", "ecliptic.cli.main"]
"""The CLI as its own process, as a user runs it."""


def _installed_env(cloud: Cloud, cli_env: Path) -> dict[str, str]:
    return {**os.environ, "ECLIPTIC_URL": cloud.url, "XDG_CONFIG_HOME": str(cli_env)}


def _run_installed(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*INSTALLED, *args], input=stdin, env=env, capture_output=True, text=True, timeout=60
    )


def test_installed_command_exit_codes_and_clean_json(cloud: Cloud, cli_env: Path) -> None:
    env = _installed_env(cloud, cli_env)

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return _run_installed(env, *args, stdin=stdin)

    res = run("--help")
    assert res.returncode == 0 and "Exit codes" in res.stdout and "(404)" in res.stdout
    res = run("login", "--user", "admin", "--password-stdin", stdin=ADMIN_PASSWORD)
    assert res.returncode == 0, res.stderr
    res = run("-o", "json", "whoami")
    assert res.returncode == 0 and json.loads(res.stdout)["tenancy"] == "default"
    res = run("server", "show", "nothing-here")
    assert (res.returncode, res.stdout) == (3, "")
    assert res.stderr.startswith("error: no server 'nothing-here'")


def test_user_disable_enable_and_delete(admin_cli: Cli, cloud: Cloud) -> None:
    res = admin_cli("user", "create", "cli-mallory", "--password-stdin", input="mallory-pass-1\n")
    assert res.exit_code == 0, res.output
    res = admin_cli("user", "disable", "cli-mallory")
    assert res.exit_code == 0, res.output
    assert "user cli-mallory: disabled; their tokens and sessions have ended" in res.stdout
    res = admin_cli("-o", "json", "user", "list")
    users = {u["name"]: u for u in json.loads(res.stdout)}
    assert users["cli-mallory"]["disabled"] is True
    res = admin_cli("user", "enable", "cli-mallory")
    assert res.exit_code == 0 and "user cli-mallory: enabled" in res.stdout
    res = admin_cli("user", "delete", "cli-mallory")
    assert res.exit_code == 0 and "user cli-mallory: removed" in res.stdout
    res = admin_cli("user", "delete", "cli-mallory")
    assert res.exit_code == 3, res.output
    res = admin_cli("user", "disable", "admin")
    assert res.exit_code == 4 and "cannot disable yourself" in res.stderr


def test_server_wait_and_log_follow(admin_cli: Cli, cloud: Cloud, cli_env: Path) -> None:
    res = admin_cli("server", "create", "cli-follow", "--flavor", "m1.tiny")
    assert res.exit_code == 0, res.output
    res = admin_cli("server", "wait", "cli-follow", "--for", "active", "--timeout", "60")
    assert res.exit_code == 0 and "server cli-follow: ACTIVE" in res.stdout, res.output
    res = admin_cli("server", "wait", "cli-follow", "--for", "sideways")
    assert res.exit_code == 2 and "not a server phase" in res.output
    res = admin_cli("server", "wait", "cli-follow", "--for", "DELETED", "--timeout", "0.3")
    assert res.exit_code == 7, res.output

    srv = cloud.admin().servers.get("cli-follow")
    console = Path(cloud.runtime.settings.data_dir) / "local" / "servers" / srv.id / "console.log"
    env = _installed_env(cloud, cli_env)
    login = _run_installed(
        env, "login", "--user", "admin", "--password-stdin", stdin=ADMIN_PASSWORD
    )
    assert login.returncode == 0, login.stderr
    follower = subprocess.Popen(
        [*INSTALLED, "server", "log", "cli-follow", "--follow", "--interval", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # the follower has printed the tail and is looking for more
        with console.open("a") as f:  # what a service inside the server would write
            f.write("service says héllo\n")
        time.sleep(1.0)
        assert admin_cli("server", "delete", "cli-follow").exit_code == 0
        res = admin_cli("server", "wait", "cli-follow", "--for", "DELETED", "--timeout", "60")
        assert res.exit_code == 0 and "server cli-follow: gone" in res.stdout
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert "ecliptic:" in out  # the boot lines of the tail
    assert out.count("service says héllo\n") == 1, out
    assert "server cli-follow is gone" in err


def test_quota_show_and_set(admin_cli: Cli) -> None:
    res = admin_cli("quota", "show")
    assert res.exit_code == 0, res.output
    assert "servers" in res.stdout and "(site default)" in res.stdout
    res = admin_cli("-o", "json", "quota", "set", "default", "--servers", "1", "--gpus", "2")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["limits"]["servers"] == 1 and doc["defaults"]["servers"] is False
    res = admin_cli("server", "create", "cli-q1", "--flavor", "m1.tiny")
    assert res.exit_code == 0, res.output
    res = admin_cli("server", "create", "cli-q2", "--flavor", "m1.tiny")
    assert res.exit_code == 4 and "on-demand quota 'servers' exceeded" in res.stderr
    res = admin_cli("quota", "set", "default", "--default", "servers", "--default", "gpus")
    assert res.exit_code == 0, res.output
    assert admin_cli("server", "delete", "cli-q1", "--wait").exit_code == 0
    res = admin_cli("quota", "set", "default")
    assert res.exit_code == 2


def test_flavors_say_where_they_run_and_admins_choose(admin_cli: Cli) -> None:
    res = admin_cli("flavor", "list")
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[1:]}
    assert "lease" in rows["g1.h100"] and "on demand" in rows["m1.tiny"]
    gpu = ["--vcpus", "2", "--memory-mb", "4096", "--gpu-model", "A100", "--gpus", "1"]
    res = admin_cli("-o", "json", "flavor", "create", "g1.shared", *gpu, "--on-demand")
    assert res.exit_code == 0 and json.loads(res.stdout)["reservation_only"] is False, res.output
    res = admin_cli("-o", "json", "flavor", "create", "g1.resv", *gpu)
    assert json.loads(res.stdout)["reservation_only"] is True
    for name in ("g1.shared", "g1.resv"):
        assert admin_cli("flavor", "delete", name).exit_code == 0


def test_images_from_the_cli(admin_cli: Cli) -> None:
    res = admin_cli("image", "list")
    assert res.exit_code == 0 and "base" in res.stdout and "slurm" in res.stdout, res.output
    res = admin_cli("server", "create", "cli-img", "--flavor", "m1.tiny", "--image", "nope")
    assert res.exit_code == 1 and "no image called 'nope'" in res.stderr, res.output
    assert "ecliptic image list" in res.stderr
    res = admin_cli("server", "create", "cli-img", "--flavor", "m1.tiny", "--wait")
    assert res.exit_code == 0 and "base@1" in res.stdout, res.output
    res = admin_cli("image", "build", "base")  # built: a cache hit answers at once
    assert res.exit_code == 0 and "built" in res.stdout, res.output
    res = admin_cli("-o", "json", "image", "show", "base")
    assert res.exit_code == 0 and json.loads(res.stdout)["status"] == "built"
    res = admin_cli("image", "log", "base")
    assert res.exit_code == 0 and "$ apt-get install" in res.stdout, res.output
    res = admin_cli("image", "delete", "base")
    assert res.exit_code == 4 and "cli-img" in res.stderr, res.output
    assert admin_cli("server", "delete", "cli-img", "--wait").exit_code == 0


def test_security_groups_from_the_cli(admin_cli: Cli) -> None:
    res = admin_cli("security-group", "create", "cli-web", "--description", "web servers")
    assert res.exit_code == 0 and "no rules" in res.output, res.output
    res = admin_cli("security-group", "rule-create", "cli-web", "--protocol", "tcp",
                    "--port", "8000-8100", "--remote-cidr", "198.18.0.0/15")  # fmt: skip
    assert res.exit_code == 0 and "ingress tcp 8000-8100 198.18.0.0/15" in res.stdout, res.output
    rule = res.stdout.split()[1].rstrip(":")
    res = admin_cli("security-group", "rule-create", "cli-web", "--port", "80")
    assert res.exit_code == 1 and "tcp or udp" in res.stderr, res.output
    res = admin_cli("security-group", "rule-create", "cli-web", "--port", "eighty")
    assert res.exit_code == 2 and "a range" in res.output
    res = admin_cli("security-group", "show", "cli-web")
    assert res.exit_code == 0 and rule in res.stdout and "8000-8100" in res.stdout
    res = admin_cli("server", "create", "cli-sg", "--flavor", "m1.tiny",
                    "--security-group", "cli-web", "--wait")  # fmt: skip
    assert res.exit_code == 0 and "cli-web" in res.stdout, res.output
    res = admin_cli("security-group", "delete", "cli-web")
    assert res.exit_code == 4 and "cli-sg" in res.stderr, res.output
    res = admin_cli("server", "set-security-groups", "cli-sg", "--security-group", "default")
    assert res.exit_code == 0 and "default" in res.stdout, res.output
    assert admin_cli("security-group", "rule-delete", "cli-web", rule).exit_code == 0
    assert admin_cli("security-group", "delete", "cli-web").exit_code == 0
    res = admin_cli("-o", "json", "security-group", "list")
    assert [g["name"] for g in json.loads(res.stdout)] == ["default"]
    assert admin_cli("server", "delete", "cli-sg", "--wait").exit_code == 0


def test_console_logs_cannot_drive_the_readers_terminal() -> None:
    from ecliptic.cli.servers import _printable

    assert _printable("ok\tline\n\x1b]0;pwned\x07\x1b[2J\x9b") == (
        "ok\tline\n\\x1b]0;pwned\\x07\\x1b[2J\\x9b"
    )
