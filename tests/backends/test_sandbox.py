"""Servers are sandboxes: what a server can do, and every way out an attacker would try.

Each escape is tried as root inside a real server (``run`` is what ``ecliptic server exec``
uses) and must fail; a second server and the host are the targets.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from ecliptic.backends.base import BackendError, ImageError, ServerSpec, ServiceSpec
from ecliptic.backends.local import LocalBackend, sandbox
from ecliptic.backends.local.images import ImageStore, load_recipe
from ecliptic.backends.local.names import netns_name
from tests.backends.conftest import Lab


def sh(b: LocalBackend, sid: str, script: str, timeout: float = 30) -> tuple[int, str]:
    """Run a shell script as root in a server: (exit code, stdout + stderr)."""
    res = b.run(sid, ["/bin/sh", "-c", script], timeout=timeout)
    return res.exit_code, (res.stdout + res.stderr).decode(errors="replace")


def two_servers(lab: Lab) -> tuple[LocalBackend, ServerSpec, ServerSpec]:
    b = lab.backend()
    net = lab.network(b)
    a, c = lab.server(net, "alpha", 10), lab.server(net, "beta", 11)
    b.ensure_server(a)
    b.ensure_server(c)
    return b, a, c


CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_TIME, CAP_MKNOD, CAP_NET_ADMIN = (
    21,
    16,
    19,
    25,
    27,
    12,
)


def test_a_server_has_its_own_everything(lab: Lab) -> None:
    b, a, _ = two_servers(lab)
    code, out = sh(b, a.id, "hostname; cat /etc/hostname; echo pid1=$(cat /proc/1/comm)")
    assert code == 0 and out.split() == ["alpha", "alpha", "pid1=init"], out
    # Its own PID namespace: a handful of processes, none of the host's or beta's.
    code, out = sh(b, a.id, "ls /proc | grep -c '^[0-9]'")
    assert int(out) < 10, out
    # Root inside, without the capabilities that rule the machine.
    code, out = sh(b, a.id, "grep CapBnd /proc/self/status; id -u")
    bnd = int(out.split()[1], 16)
    assert out.split()[2] == "0"
    for cap in (CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_TIME, CAP_MKNOD):
        assert not bnd & (1 << cap), f"capability {cap} is in the bounding set: {out}"
    assert not bnd & (1 << CAP_NET_ADMIN)
    # Its own /tmp, /run, /dev; a read-only /sys; the host's system files.
    devices = b.run(a.id, ["ls", "/dev"]).stdout.decode().split()
    assert "null" in devices and "vda" not in devices and "sda" not in devices, devices
    code, out = sh(b, a.id, "ls /run | wc -l; touch /sys/x 2>/dev/null; echo $?")
    assert out.split() == ["0", "1"], out
    code, out = sh(b, a.id, "cat /etc/os-release | head -1; ls /usr/bin/python3 /bin/sh")
    assert code == 0 and "PRETTY_NAME" in out, out
    # Ecliptic's own client, read-only.
    code, out = sh(b, a.id, "/opt/ecliptic/bin/ecliptic --version; touch /opt/ecliptic/bin/x")
    assert "ecliptic" in out.lower() and "Read-only file system" in out, out


def test_writes_and_installs_stay_in_their_server(lab: Lab, tmp_path: Path) -> None:
    b, a, c = two_servers(lab)
    # A Debian package, built here, installed in alpha only.
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/bin").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: ecl-probe\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: tests <t@example.org>\nDescription: probe\n"
    )
    (pkg / "usr/bin/ecl-probe").write_text("#!/bin/sh\necho probe-ran\n")
    (pkg / "usr/bin/ecl-probe").chmod(0o755)
    deb = tmp_path / "ecl-probe.deb"
    subprocess.run(["dpkg-deb", "--build", str(pkg), str(deb)], check=True, capture_output=True)
    res = b.run(
        a.id, ["sh", "-c", "cat > /tmp/p.deb && dpkg -i /tmp/p.deb"], stdin=deb.read_bytes()
    )
    assert res.exit_code == 0, res.stderr.decode()
    assert sh(b, a.id, "ecl-probe; dpkg -s ecl-probe | grep Status")[1].split() == [
        "probe-ran",
        "Status:",
        "install",
        "ok",
        "installed",
    ]
    # A venv with pip, as a user's `pip install` would make.
    code, out = sh(b, a.id, "python3 -m venv /opt/v && /opt/v/bin/pip --version", timeout=120)
    assert code == 0 and "pip" in out, out
    # Files written anywhere: /usr, /etc, /root.
    code, out = sh(b, a.id, "echo s3cret > /root/secret; echo x > /usr/local/bin/ecl-mark; "
                   "echo '# alpha' >> /etc/profile; echo ok")  # fmt: skip
    assert out.strip() == "ok", out
    assert not Path("/usr/bin/ecl-probe").exists() and not Path("/opt/v").exists()
    assert not Path("/usr/local/bin/ecl-mark").exists()
    assert "# alpha" not in Path("/etc/profile").read_text()
    code, out = sh(b, c.id, "ls /usr/bin/ecl-probe /opt/v /root/secret /usr/local/bin/ecl-mark; "
                   "dpkg -s ecl-probe")  # fmt: skip
    assert out.count("No such file") == 4 and "is not installed" in out, out
    assert sh(b, c.id, "grep -c alpha /etc/profile")[1].strip() == "0"
    # Deleting alpha removes its disk.
    disk = b.state_dir / "servers" / a.id / "disk"
    assert (disk / "upper/usr/bin/ecl-probe").exists()
    b.delete_server(a.id)
    assert not disk.exists()


ESCAPES = {
    # what is tried: (script, what must be in its output)
    "mount a filesystem": ("mount -t tmpfs x /mnt; echo rc=$?", "rc=32"),
    "remount /sys writable": ("mount -o remount,rw /sys; echo rc=$?", "rc=32"),
    "write the kernel's settings": ("echo 10 > /proc/sys/vm/swappiness", "Read-only file system"),
    "drop the host's caches": ("echo 3 > /proc/sys/vm/drop_caches", "Read-only file system"),
    "trigger sysrq": ("echo h > /proc/sysrq-trigger; echo rc=$?", "rc=2"),
    "make a device node": ("mknod /tmp/vda b 253 0; echo rc=$?", "rc=1"),
    "change the hostname": ("hostname evil 2>/dev/null; echo rc=$?; hostname", "rc=1"),
    "reach the host's network namespaces": ("ls /run/netns; echo rc=$?", "rc=2"),
    "new namespaces (user)": ("unshare -U true; echo rc=$?", "rc=1"),
    "new namespaces (mount)": ("unshare -m true; echo rc=$?", "rc=1"),
    "set the clock": ("date -s '2001-01-01'; echo rc=$?", "rc=1"),
    "read the kernel's memory": ("head -c 16 /proc/kcore | wc -c", "0"),
    "write the init's binary": ("echo x > /proc/1/exe; echo rc=$?", "rc="),
    "reopen the init's console (a host file)": (
        "python3 -c \"import os; os.open('/proc/1/fd/1', os.O_RDWR)\" 2>&1 | tail -1",
        "PermissionError",
    ),
    "read the host's page state": ("head -c 8 /proc/kpageflags | wc -c", "0"),
    "find the host's data": (
        "find /work /home /root /srv /var/lib/postgresql /var/log -mindepth 1 2>/dev/null | wc -l",
        "0",
    ),
    "read the host's secrets": (
        "cat /etc/ssh/ssh_host_ed25519_key 2>&1 | head -1; cut -d: -f2 /etc/shadow | sort -u",
        "*",
    ),
}

SYSCALLS = textwrap.dedent(
    """
    import ctypes, errno
    libc = ctypes.CDLL(None, use_errno=True)
    calls = {"init_module": (175, 0, 0, b""), "finit_module": (313, 0, b"", 0),
             "keyctl": (250, 0, 0), "setns": (308, 3, 0), "unshare": (272, 0x10000000),
             "pivot_root": (155, b"/", b"/"), "kexec_load": (246, 0, 0, 0, 0),
             "open_by_handle_at": (304, 0, 0, 0), "bpf": (321, 0, 0, 0),
             "clone_newuser": (56, 0x10000000 | 17, 0, 0, 0, 0),
             "io_uring_setup": (425, 1, 0)}
    for name, (nr, *args) in calls.items():
        r = libc.syscall(nr, *args)
        print(name, r, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
    """
)


def test_escapes_fail(lab: Lab) -> None:
    b, a, c = two_servers(lab)
    sh(b, c.id, "echo beta-secret > /root/beta-secret")
    for what, (script, expect) in ESCAPES.items():
        _, out = sh(b, a.id, script)
        assert expect in out, f"{what}: {out!r}"
        if what == "change the hostname":
            assert out.split()[-1] == "alpha", out
        if what == "write the init's binary":
            assert "rc=0" not in out, f"{what}: {out!r}"
    assert sh(b, c.id, "hostname")[1].strip() == "beta"
    # Kernel calls that would reach beyond the server: refused.
    _, out = sh(b, a.id, f"python3 -c '{SYSCALLS}'")
    for line in out.strip().splitlines():
        _name, ret, err = line.split()
        assert ret == "-1" and err in ("EPERM", "EACCES", "ENOSYS"), out
    assert len(out.strip().splitlines()) == 11, out
    # Processes: neither the host's nor beta's can be seen or signalled.
    beta_init = b._init(c.id)
    assert beta_init is not None
    for pid in (os.getpid(), beta_init.pid, os.getppid()):
        _, out = sh(b, a.id, f"kill -0 {pid}; echo rc=$?")
        assert "rc=1" in out, f"pid {pid}: {out}"
    _, out = sh(b, a.id, "cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '")
    assert "pytest" not in out and "beta" not in out, out
    # Beta's files: not anywhere alpha can look, whatever it tries (chroot included). The
    # Python packages the agent is given (a read-only bind of Ecliptic's own, with the test
    # tools' 100 MB of Kubernetes schemas) are left out: they are the host's, not beta's.
    _, out = sh(b, a.id, "grep -rl beta-secret / --exclude-dir=proc --exclude-dir=sys "
                   "--exclude-dir=site-packages 2>/dev/null | head; echo done",
                timeout=90)  # fmt: skip
    assert out.strip() == "done", out
    chroot_escape = (
        "import os\nos.makedirs('/tmp/j', exist_ok=True)\nfd = os.open('/', os.O_RDONLY)\n"
        "os.chroot('/tmp/j')\nos.fchdir(fd)\nfor _ in range(64): os.chdir('..')\n"
        "os.chroot('.')\nprint(sorted(os.listdir('/')))\n"
    )
    _, out = sh(b, a.id, f'python3 -c "{chroot_escape}"')
    assert "'work'" not in out and "'usr'" in out, out
    # Nothing it did reached the host.
    assert not Path("/mnt/.ecl").exists()


def test_init_killed_marks_down_and_ensure_reboots_with_its_disk(lab: Lab) -> None:
    b, a, _ = two_servers(lab)
    sh(b, a.id, "echo kept > /root/disk-file")
    init = b._init(a.id)
    assert init is not None
    b.down_servers(0)  # nothing yet
    os.kill(init.pid, signal.SIGKILL)
    assert a.id in b.down_servers(5.0)
    assert not b.server_exists(a.id)
    with pytest.raises(BackendError, match="down"):
        b.run(a.id, ["true"])
    b.ensure_server(a)
    again = b._init(a.id)
    assert again is not None and again.pid != init.pid
    assert sh(b, a.id, "cat /root/disk-file")[1].strip() == "kept"
    log = b.console_log(a.id)
    assert "init exited" in log and "booting again" in log


def test_a_new_backend_adopts_running_servers(lab: Lab) -> None:
    b, a, _ = two_servers(lab)
    init = b._init(a.id)
    b.start_service(a.id, ServiceSpec("sleeper", ("sleep", "300")))
    other = LocalBackend(
        b.instance_id,
        b.state_dir,
        owners_dir=b.owners.directory,
        image_dir=b.image_store.image_dir,
        stale_record_grace_s=0.0,
    )
    other.ensure_server(a)
    assert other._init(a.id) == init
    assert [s.running for s in other.services(a.id)] == [True]
    # The service runs inside the sandbox, as a child of its init.
    svc = other.services(a.id)[0]
    assert svc.pid is not None
    assert os.stat(f"/proc/{svc.pid}/ns/pid").st_ino == os.stat(f"/proc/{init.pid}/ns/pid").st_ino
    other.stop_service(a.id, "sleeper")
    assert not any(s.running for s in other.services(a.id))


RECIPE = """\
name: {name}
version: "{version}"
description: a test image
files:
  - path: /etc/ecl-image
    content: "{content}\\n"
commands:
  - echo built-by-recipe > /usr/local/share/ecl-built
"""


def test_images_build_cache_rebuild_and_boot(lab: Lab, tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny.yaml").write_text(RECIPE.format(name="tiny", version="1", content="one"))
    b = lab.backend(image_recipes=(recipes,))
    names = {i.name: i for i in b.images()}
    assert {"base", "slurm", "jupyter", "dask", "perf", "tiny"} <= set(names)
    assert names["tiny"].status in ("not built", "failed")
    info = b.build_image("tiny")
    assert info.status == "built" and info.parent == "base"
    started = time.monotonic()
    again = b.build_image("tiny")
    cached = time.monotonic() - started
    assert again.hash == info.hash and cached < 1.0, cached
    net = lab.network(b)
    s = dataclasses.replace(lab.server(net, "tiny1", 20), image="tiny")
    status = b.ensure_server(s)
    assert status.image == "tiny@1"
    assert sh(b, s.id, "cat /etc/ecl-image /usr/local/share/ecl-built")[1].split() == [
        "one",
        "built-by-recipe",
    ]
    base_server = lab.server(net, "plain", 21)
    b.ensure_server(base_server)
    assert "No such file" in sh(b, base_server.id, "cat /etc/ecl-image")[1]
    # A changed recipe is a new build; the running server keeps the layers it booted from.
    (recipes / "tiny.yaml").write_text(RECIPE.format(name="tiny", version="2", content="two"))
    assert b.image("tiny").status == "outdated"
    new = b.build_image("tiny")
    assert new.hash != info.hash and new.version == "2"
    assert sh(b, s.id, "cat /etc/ecl-image")[1].strip() == "one"
    # Deleting the image keeps the layer tiny1 boots from, removes the rest.
    removed = b.delete_image("tiny")
    assert removed == [new.hash]
    b.delete_server(s.id)
    assert b.delete_image("tiny") == [info.hash]
    assert b.image("tiny").status == "not built"


def test_failed_builds_and_bad_recipes_say_why(lab: Lab, tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "broken.yaml").write_text(
        "name: broken\nversion: '1'\ncommands:\n  - echo about-to-fail; exit 3\n"
    )
    b = lab.backend(image_recipes=(recipes,))
    with pytest.raises(ImageError, match="failed with status 3"):
        b.build_image("broken")
    info = b.image("broken")
    assert info.status == "failed" and "about-to-fail" in info.detail
    assert "about-to-fail" in b.image_log("broken")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\nversion: '1'\napt: ['not a package!']\nextra: 1\n")
    with pytest.raises(Exception) as err:
        load_recipe(bad)
    message = str(err.value)
    assert "name" in message and "apt" in message and "extra" in message, message
    with pytest.raises(ImageError, match="no image called 'nope'"):
        b.build_image("nope")


def test_host_layer_shows_the_system_and_hides_the_rest(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", binary=lambda: sandbox.find_binary() or "")
    layer = store.host_layer()
    assert (layer / "usr/bin/sh").exists() or (layer / "usr/bin/dash").exists()
    assert (layer / "etc/passwd").exists() and (layer / "var/lib/dpkg/status").exists()
    assert not any((layer / "etc/ssh").glob("ssh_host_*_key"))
    assert all(
        line.split(":")[1] == "*" for line in (layer / "etc/shadow").read_text().splitlines()
    )
    for hidden in ("root", "home", "srv", "opt", "var/log", "tmp"):
        assert list((layer / hidden).iterdir()) == [], hidden
    assert not (layer / "work").exists() and not (layer / "var/lib/postgresql").exists()
    shutil.rmtree(tmp_path / "images")


def test_a_fork_bomb_stays_in_its_server(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    s = lab.server(net, "bomb", 30)
    b.ensure_server(s)
    # More processes than its flavor allows (1 vCPU: 1024): the kernel refuses the rest.
    script = "i=0; while [ $i -lt 1100 ]; do sleep 30 & i=$((i+1)); done 2>&1 | head -1; echo done"
    _, out = sh(b, s.id, script, timeout=60)
    assert "fork" in out.lower() or "resource" in out.lower(), out
    pids = Path(f"/sys/fs/cgroup/pids/ecliptic/{netns_name(s.id)}/pids.current").read_text()
    assert int(pids) <= 1024
    b.delete_server(s.id)


def test_a_tenant_symlink_is_never_followed_by_the_host(lab: Lab, tmp_path: Path) -> None:
    """A server whose /etc (or any path the host writes on a boot) is a symlink to a host
    folder, rebooted: the host writes nothing there."""
    target = tmp_path / "host-folder"
    target.mkdir()
    b = lab.backend()
    net = lab.network(b)
    s = lab.server(net, "sly", 40)
    b.ensure_server(s)
    _, out = sh(b, s.id, f"cp -a /etc /etc.bak && rm -rf /etc && ln -s {target} /etc; echo ok")
    assert out.strip().endswith("ok"), out
    init = b._init(s.id)
    assert init is not None
    os.kill(init.pid, signal.SIGKILL)
    assert s.id in b.down_servers(5.0)
    b.ensure_server(s)  # boots again
    assert sh(b, s.id, "readlink /etc")[1].strip() == str(target)
    assert list(target.iterdir()) == []


def test_a_recipe_cannot_make_the_build_delete_host_files(lab: Lab, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (victim / "log").mkdir(parents=True)
    (victim / "log" / "keep").write_text("host data\n")
    (victim / "lib/apt/lists").mkdir(parents=True)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "sly.yaml").write_text(
        f"name: sly\nversion: '1'\ncommands:\n  - rm -rf /var /usr/sbin && "
        f"ln -s {victim} /var && ln -s {victim} /usr/sbin\n"
    )
    b = lab.backend(image_recipes=(recipes,))
    assert b.build_image("sly").status == "built"
    assert (victim / "log" / "keep").read_text() == "host data\n"
    assert (victim / "lib/apt/lists").is_dir()
