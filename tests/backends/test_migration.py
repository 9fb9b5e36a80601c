"""Cold migration in the local cloud: ``stop_server`` then ``ensure_server`` on another host.

A move keeps what a user would miss (the files on the server's disk, its addresses and
MACs, its peers' reach) and changes what a move changes (its processes, its host).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ecliptic.backends.base import ServerSpec, ServiceSpec
from ecliptic.backends.local import LocalBackend, netns
from ecliptic.backends.local.names import netns_name, veth_name

from .conftest import Lab


def sh(b: LocalBackend, sid: str, script: str) -> str:
    res = b.run(sid, ["/bin/sh", "-c", script], timeout=10)
    assert res.exit_code == 0, (res.stdout + res.stderr).decode(errors="replace")
    return res.stdout.decode()


def ping(b: LocalBackend, sid: str, address: str) -> bool:
    return b.run(sid, ["ping", "-c1", "-W1", address], timeout=5).exit_code == 0


PF_EXITING = 0x4


def gone(pid: int) -> bool:
    """The process has exited: reaped, a zombie, or exiting (an init exits only once its
    namespace's zombies are reaped by their parent, which may be the host's init)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()
    except OSError:
        return True
    return fields[0] == "Z" or bool(int(fields[6]) & PF_EXITING)


def moved(spec: ServerSpec, host: str) -> ServerSpec:
    return dataclasses.replace(spec, host=host)


def test_a_moved_server_keeps_its_disk_addresses_and_peers(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    a, c = lab.server(net, "alpha", 10), lab.server(net, "beta", 11)
    before = b.ensure_server(a)
    b.ensure_server(c)
    lab.open_walls(b, a, c)
    ip_a, ip_c = (s.ports[0].addresses[0].split("/")[0] for s in (a, c))
    assert ping(b, c.id, ip_a)
    sh(b, a.id, "echo kept-across-the-move > /root/data; mkdir -p /srv/x; echo y > /srv/x/z")
    svc = b.start_service(a.id, ServiceSpec("sleeper", ("sleep", "300")))
    old_init = b._init(a.id)
    assert old_init is not None and svc.pid is not None

    b.stop_server(a.id)
    assert not b.server_exists(a.id)
    assert gone(old_init.pid) and gone(svc.pid)
    assert netns.exists(netns_name(a.id))  # its namespace and ports are kept for the move
    assert not ping(b, c.id, ip_a)  # nobody answers while it is stopped

    after = b.ensure_server(moved(a, "cpu-r1-02"))
    assert after.host == "cpu-r1-02"
    assert after.interfaces == before.interfaces  # same names, MACs and addresses
    new_init = b._init(a.id)
    assert new_init is not None and new_init.pid != old_init.pid
    assert sh(b, a.id, "cat /root/data /srv/x/z").split() == ["kept-across-the-move", "y"]
    assert sh(b, a.id, "hostname").strip() == "alpha"
    assert ping(b, c.id, ip_a) and ping(b, a.id, ip_c)
    assert [s.running for s in b.services(a.id)] == [False]  # processes do not move
    meta = json.loads((b.state_dir / "servers" / a.id / "server.json").read_text())
    assert meta["host"] == "cpu-r1-02"
    log = b.console_log(a.id)
    assert "stopped to move from host cpu-r1-01" in log
    assert "started on host cpu-r1-02" in log
    assert log.index("stopped to move") < log.index("started on host cpu-r1-02")
    # And back: a second move works the same way.
    b.stop_server(a.id)
    b.ensure_server(a)
    assert sh(b, a.id, "cat /root/data").strip() == "kept-across-the-move"
    assert "started on host cpu-r1-01" in b.console_log(a.id)


def test_stop_is_idempotent_and_tolerates_a_crash(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    a = lab.server(net, "gamma", 10)
    b.ensure_server(a)
    b.stop_server(a.id)
    b.stop_server(a.id)
    assert b.console_log(a.id).count("stopped to move") == 1
    b.ensure_server(moved(a, "cpu-r1-02"))
    b.ensure_server(moved(a, "cpu-r1-02"))  # ensure after ensure changes nothing
    assert b.console_log(a.id).count("booted from image") == 2
    # A server whose init crashed is stopped too; then it starts again with its disk.
    sh(b, a.id, "echo still-here > /root/f")
    init = b._init(a.id)
    assert init is not None
    os.kill(init.pid, signal.SIGKILL)
    b.stop_server(a.id)
    b.ensure_server(moved(a, "cpu-r1-03"))
    assert sh(b, a.id, "cat /root/f").strip() == "still-here"
    assert "started on host cpu-r1-03" in b.console_log(a.id)
    b.stop_server(lab.new_id())  # a server that does not exist is stopped already


def test_the_watcher_does_not_repair_a_stopped_server(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    servers = [lab.server(net, f"s{i}", 10 + i) for i in range(4)]
    for s in servers:
        b.ensure_server(s)
    reported: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # what runtime's watcher does, without the database
        while not stop.is_set():
            reported.extend(b.down_servers(0.05))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for s in servers:  # stop and start at once: a freed pidfd number is reused at once
            b.stop_server(s.id)
            b.ensure_server(moved(s, "cpu-r1-02"))
        b.stop_server(servers[0].id)
        time.sleep(0.5)
        assert reported == []
        assert not b.server_exists(servers[0].id)  # still stopped: nothing restarted it
        # A crash after the moves is still noticed (the new inits are watched).
        init = b._init(servers[1].id)
        assert init is not None
        os.kill(init.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not reported and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reported == [servers[1].id]
    finally:
        stop.set()
        watcher.join()


def test_servers_move_in_parallel(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    servers = [lab.server(net, f"p{i}", 10 + i) for i in range(6)]
    for s in servers:
        b.ensure_server(s)
        sh(b, s.id, f"echo {s.name} > /root/who")

    def move(s: ServerSpec) -> None:
        b.stop_server(s.id, grace_s=0.2)
        b.ensure_server(moved(s, "cpu-r2-01"))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(move, servers))
    for s in servers:
        assert sh(b, s.id, "cat /root/who").strip() == s.name
        assert "started on host cpu-r2-01" in b.console_log(s.id)


def test_a_stopped_server_deleted_leaves_nothing(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    a = lab.server(net, "delta", 10)
    b.ensure_server(a)
    ns = netns_name(a.id)
    b.stop_server(a.id)
    b.delete_server(a.id)
    assert not netns.exists(ns)
    assert not (b.state_dir / "servers" / a.id).exists()
    assert not (lab.owners_dir / ns).exists()
    assert not (lab.owners_dir / veth_name(a.ports[0].id)).exists()
    assert not (Path("/sys/fs/cgroup/cpu/ecliptic") / ns).exists()
    assert b.observe({a.id}, {net.id}).ids("server") == set()
