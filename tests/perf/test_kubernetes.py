"""Benchmarks exported to Kubernetes: valid objects, the right wiring, our own command lines."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

import kubernetes_validate
import pytest
import yaml
from pydantic import Field

from ecliptic.perf.kinds import registry
from ecliptic.perf.kinds.base import NETWORKS, Params
from ecliptic.perf.kinds.iperf3 import Iperf3, Iperf3Params
from ecliptic.perf.kubernetes import (
    PEER,
    fio_size,
    set_to_kube_perftest,
    to_jobs,
    to_kube_perftest,
    to_yaml,
)
from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec, expand

K8S = "1.35.0"
"""The Kubernetes version whose OpenAPI schemas (as kubernetes-validate ships them) the
exported objects must satisfy, strictly: a field the schema does not know fails."""
NET = "default/shared-network"
SLURM_SCRIPT = "#!/bin/sh\nsrun hostname\n"
RDMA = "rdma/rdma_shared_device_a"


# The kinds other than iperf3 live in their own modules; until those are on this branch the
# tests register stand-ins with the same parameters (names, types and defaults), and use the
# real kinds as soon as they are registered.


class _MpiParams(Params):
    max_log: Annotated[int, Field(ge=0, le=26)] = 22
    repetitions: Annotated[int, Field(ge=1, le=100_000)] = 1000
    transport: Literal["tcp", "rdma"] = "tcp"


class _RdmaParams(Params):
    mode: Literal["read", "write", "send"] = "write"
    iterations: Annotated[int, Field(ge=5, le=1_000_000)] = 1000
    size: int | None = None
    duration: int | None = None
    extra_args: list[str] = []


class _RdmaBwParams(_RdmaParams):
    qps: Annotated[int, Field(ge=1, le=1024)] = 1


class _FioParams(Params):
    rw: Literal["read", "write", "randread", "randwrite", "readwrite", "randrw"] = "randread"
    bs: int = 4096
    iodepth: int = 16
    size: int = 256 << 20
    runtime: int = 10
    numjobs: int = 1
    direct: Literal[0, 1] = 1
    ioengine: Literal["libaio", "psync"] = "libaio"
    rwmixread: int = 50


class _SlurmParams(Params):
    script: str
    nodes: list[int]
    ntasks_per_node: int | None = None
    time_limit_min: int = 10


class _StandIn:
    title: ClassVar[str] = "stand-in for a kind not yet on this branch"
    tools: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def __init__(self, name: str, params: type[Params], platform: bool = False) -> None:
        self.name = name
        self.params = params
        self.needs_platform = platform
        self.networks = ("bridge",) if platform else NETWORKS


STAND_INS = [
    _StandIn("mpi_pingpong", _MpiParams),
    _StandIn("rdma_bandwidth", _RdmaBwParams),
    _StandIn("rdma_latency", _RdmaParams),
    _StandIn("fio", _FioParams),
    _StandIn("slurm_job", _SlurmParams, platform=True),
]


@pytest.fixture(autouse=True, scope="module")
def _kinds() -> Iterator[None]:
    known = set(registry.names())
    with pytest.MonkeyPatch.context() as mp:
        for kind in STAND_INS:
            if kind.name not in known:
                mp.setitem(registry._KINDS, kind.name, kind)  # type: ignore[arg-type]
        yield


def spec(kind: str, network: str = "bridge", **params: Any) -> BenchmarkSpec:
    return BenchmarkSpec.model_validate({"kind": kind, "network": network, kind: params})


CASES: list[tuple[str, str, dict[str, Any]]] = [
    *[("iperf3", n, {"streams": 4, "duration": 5}) for n in NETWORKS],
    ("iperf3", "bridge", {"protocol": "udp", "bitrate": 1_000_000_000, "direction": "bidir"}),
    *[("mpi_pingpong", n, {"max_log": 20}) for n in NETWORKS],
    ("mpi_pingpong", "direct", {"transport": "rdma"}),
    *[("rdma_bandwidth", n, {"mode": "read", "qps": 4}) for n in NETWORKS],
    *[("rdma_latency", n, {"mode": "write", "iterations": 5000}) for n in NETWORKS],
    ("fio", "bridge", {"rw": "randrw", "bs": 65536, "numjobs": 2}),
    ("fio", "host", {}),
]
IDS = [f"{k}-{n}-{i}" for i, (k, n, _) in enumerate(CASES)]


def jobs(kind: str, network: str, params: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    return to_jobs(spec(kind, network, **params), "bench1", "perf", network_name=NET, **kw)


def pods(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each Job's pod template by the Job's name."""
    return {o["metadata"]["name"]: o["spec"]["template"] for o in objs if o["kind"] == "Job"}


def script(pod: dict[str, Any]) -> str:
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    return str(command[2])


# Plain Jobs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "network", "params"), CASES, ids=IDS)
def test_jobs_are_valid_kubernetes_objects(kind: str, network: str, params: dict[str, Any]) -> None:
    objs = jobs(kind, network, params)
    for obj in objs:
        kubernetes_validate.validate(obj, K8S, strict=True)
    assert list(yaml.safe_load_all(to_yaml(objs))) == objs
    for pod in pods(objs).values():  # every script is one a POSIX shell accepts
        subprocess.run(["sh", "-n", "-c", script(pod)], check=True)


def test_the_schema_check_is_strict() -> None:
    (job,) = [o for o in jobs("fio", "bridge", {}) if o["kind"] == "Job"]
    job["spec"]["template"]["spec"]["containers"][0]["capabilities"] = {"add": ["IPC_LOCK"]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S, strict=True)


@pytest.mark.parametrize(("kind", "network", "params"), CASES, ids=IDS)
def test_jobs_wire_the_network_mode(kind: str, network: str, params: dict[str, Any]) -> None:
    for name, pod in pods(jobs(kind, network, params)).items():
        spec_ = pod["spec"]
        annotations = pod["metadata"].get("annotations", {})
        if network == "host":
            assert spec_["hostNetwork"] is True
            assert spec_["dnsPolicy"] == "ClusterFirstWithHostNet", name
        else:
            assert "hostNetwork" not in spec_
        if network == "direct":
            attachment = json.loads(annotations["k8s.v1.cni.cncf.io/networks"])
            assert attachment == [
                {"name": "shared-network", "namespace": "default", "interface": "net1"}
            ]
            assert 'IFACE=net1\nADDR=$(ip -4 -o addr show dev "$IFACE"' in script(pod)
        else:
            assert "k8s.v1.cni.cncf.io/networks" not in annotations
            assert 'ADDR="$POD_IP"' in script(pod)


@pytest.mark.parametrize(("kind", "network", "params"), CASES, ids=IDS)
def test_rdma_pods_get_the_device_and_may_lock_memory(
    kind: str, network: str, params: dict[str, Any]
) -> None:
    rdma = kind.startswith("rdma_") or params.get("transport") == "rdma"
    for pod in pods(
        jobs(kind, network, params, rdma_resource="rdma/hca_shared_devices_a")
    ).values():
        container = pod["spec"]["containers"][0]
        if rdma:
            assert container["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
            one = {"rdma/hca_shared_devices_a": "1"}
            assert container["resources"] == {"requests": one, "limits": one}
        else:
            assert "securityContext" not in container and "resources" not in container


def test_a_two_ended_benchmark_is_a_service_and_two_jobs_on_different_nodes() -> None:
    objs = to_jobs(spec("iperf3"), "tput", "perf", ttl_s=600)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Service", "tput"),
        ("Job", "tput-server"),
        ("Job", "tput-client"),
    ]
    service = objs[0]["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert service["selector"] == {
        "app.kubernetes.io/instance": "tput",
        "app.kubernetes.io/component": "server",
    }
    assert {p["port"] for p in service["ports"]} == {5200, 5201}
    for job in objs[1:]:
        assert job["metadata"]["namespace"] == "perf"
        js = job["spec"]
        assert (js["backoffLimit"], js["ttlSecondsAfterFinished"]) == (0, 600)
        assert js["activeDeadlineSeconds"] == 1800  # the spec's timeout_s
        pod = js["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (term,) = pod["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/instance": "tput"}
        assert (
            js["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            in job["metadata"]["name"]
        )
    # The server's Service selects the server's pod.
    server_labels = objs[1]["spec"]["template"]["metadata"]["labels"]
    assert all(server_labels[k] == v for k, v in service["selector"].items())


def test_mpi_adds_a_service_for_the_launcher_and_fio_is_one_job() -> None:
    objs = to_jobs(spec("mpi_pingpong"), "mpi", "perf")
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Service", "mpi"),
        ("Service", "mpi-client"),
        ("Job", "mpi-server"),
        ("Job", "mpi-client"),
    ]
    assert objs[1]["spec"]["selector"]["app.kubernetes.io/component"] == "client"
    (job,) = to_jobs(spec("fio"), "disk", "perf")
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert "affinity" not in pod


def test_the_client_runs_the_kinds_own_command_line() -> None:
    # iperf3: exactly the kind's command, to the address the server's beacon gave.
    for params in ({"streams": 4}, {"protocol": "udp", "bitrate": 10**9, "direction": "reverse"}):
        s = spec("iperf3", **params)
        pod = pods(to_jobs(s, "ip", "perf"))["ip-client"]
        argv = Iperf3().command(Iperf3Params.model_validate(s.params), PEER)
        expected = " ".join(a if a is PEER else shlex.quote(a) for a in argv)
        assert f"\nexec {expected}\n" in script(pod)
        server = script(pods(to_jobs(s, "ip", "perf"))["ip-server"])
        assert 'iperf3 --server --one-off --port 5201 --bind "$ADDR"' in server
    # The other kinds: their command lines as their modules document them.
    client = script(
        pods(jobs("rdma_bandwidth", "direct", {"mode": "read", "qps": 4}))["bench1-client"]
    )
    assert 'exec ib_read_bw -R -F -p 18515 -a -n 1000 --report_gbits -q 4 "$PEER"' in client
    server = script(pods(jobs("rdma_latency", "host", {"iterations": 5000}))["bench1-server"])
    assert "ib_write_lat -R -F -p 18515 -a -n 5000 >/tmp/server.log" in server
    fio = script(pods(jobs("fio", "bridge", {"rw": "randrw"}))["bench1-client"])
    assert (
        "fio --name=ecliptic --filename=/data/ecliptic-fio --output-format=json --group_reporting"
        " --time_based --runtime=10 --rw=randrw --bs=4096 --iodepth=16 --size=268435456"
        " --numjobs=1 --direct=1 --ioengine=libaio --rwmixread=50" in fio
    )
    launcher = script(pods(jobs("mpi_pingpong", "bridge", {"max_log": 20}))["bench1-client"])
    assert "/usr/local/bin/mpi-pingpong -msglog 20 -iter 1000" in launcher
    assert '--mca btl self,tcp --mca btl_tcp_if_include "$IFACES"' in launcher
    # When the real kinds are registered, their own command builders must agree.
    fio_kind: Any = registry.find("fio")
    if hasattr(fio_kind, "command"):
        p = fio_kind.params.model_validate({"rw": "randrw"})
        assert shlex.join(fio_kind.command(p, "/data/ecliptic-fio")) in fio
    for name in ("rdma_bandwidth", "rdma_latency"):
        rdma: Any = registry.find(name)
        if hasattr(rdma, "options"):
            p = rdma.params.model_validate({"mode": "read", "extra_args": ["--tclass=96"]})
            own = shlex.join([rdma.program(p), *rdma.options(p)])
            objs = jobs(name, "host", {"mode": "read", "extra_args": ["--tclass=96"]})
            assert f'exec {own} "$PEER"' in script(pods(objs)["bench1-client"])


def test_shaping_is_a_token_bucket_on_the_measured_interface() -> None:
    s = BenchmarkSpec.model_validate(
        {"kind": "iperf3", "network": "direct", "shaping": {"rate": "1gbit", "burst": "64kb"}}
    )
    for pod in pods(to_jobs(s, "sh", "perf", network_name=NET)).values():
        assert (
            'tc qdisc replace dev "$IFACE" root tbf rate 1000000000bit burst 65536 latency 50ms'
            in script(pod)
        )
        caps = pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
        assert caps == ["NET_ADMIN"]


def test_what_cannot_run_as_jobs_is_refused_clearly() -> None:
    slurm = BenchmarkSpec.model_validate(
        {
            "kind": "slurm_job",
            "platform": "hpc",
            "slurm_job": {"script": SLURM_SCRIPT, "nodes": [1, 2]},
        }
    )
    with pytest.raises(ValueError, match="slurm_job does not run as plain Kubernetes Jobs"):
        to_jobs(slurm, "s", "perf")
    with pytest.raises(ValueError, match="network 'direct' needs network_name"):
        to_jobs(spec("iperf3", "direct"), "x", "perf")
    with pytest.raises(ValueError, match="not a benchmark name"):
        to_jobs(spec("iperf3"), "Not_A_Name", "perf")
    with pytest.raises(ValueError, match="not a device plugin resource"):
        to_jobs(spec("rdma_latency"), "x", "perf", rdma_resource="no resource")


@pytest.mark.parametrize(("network", "expected"), [("bridge", "127.0.0.2"), ("direct", "10.9.0.2")])
def test_the_iperf3_pair_finds_each_other_through_the_beacon(
    tmp_path: Any, network: str, expected: str
) -> None:
    """The server and client scripts, run for real in a network and mount namespace of their
    own, with an ``iperf3`` stand-in (a TCP listener and a client) on the PATH: the client
    learns the server's address on the measured network from the beacon (in ``direct`` mode
    ``net1``'s, not the Service's), connects to it, and prints the tool's output alone."""
    if subprocess.run(["unshare", "--net", "--mount", "true"], check=False).returncode != 0:
        pytest.skip("needs root for a network and mount namespace")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    fake = bin_ / "iperf3"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import json, socket, sys\n"
        "a = sys.argv[1:]\n"
        "port = int(a[a.index('--port') + 1])\n"
        "if a[0] == '--server':\n"
        "    s = socket.create_server((a[a.index('--bind') + 1], port))\n"
        "    print('Server listening on', port, flush=True)\n"
        "    c, peer = s.accept()\n"
        "    print('served', c.recv(100).decode(), flush=True)\n"
        "else:\n"
        "    c = socket.create_connection((a[1], port))\n"
        "    c.sendall(b'hello')\n"
        "    c.close()\n"
        "    print(json.dumps({'argv': a}))\n"
    )
    fake.chmod(0o755)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.2 tput.perf.svc\n")
    objs = to_jobs(spec("iperf3", network, streams=2), "tput", "perf", network_name=NET)
    server, client = script(pods(objs)["tput-server"]), script(pods(objs)["tput-client"])
    net1 = (
        "ip link add net1 type veth peer name net1p;"
        " ip addr add 10.9.0.2/24 dev net1; ip link set net1 up;"
    )
    run = (
        f"set -e; ip link set lo up; {net1} mount --bind {hosts} /etc/hosts;"
        f" export PATH={bin_}:$PATH;"
        f" POD_IP=127.0.0.2 sh -c {shlex.quote(server)} >{tmp_path}/server.out 2>&1 & S=$!;"
        f" POD_IP=127.0.0.3 timeout 60 sh -c {shlex.quote(client)} >{tmp_path}/client.out;"
        " wait $S"
    )
    done = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", run], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, (done.stderr, (tmp_path / "server.out").read_text())
    out = json.loads((tmp_path / "client.out").read_text())  # nothing but the tool's output
    assert out["argv"][:2] == ["--client", expected]  # the address the server published
    assert "--json" in out["argv"] and out["argv"][out["argv"].index("--parallel") + 1] == "2"
    assert "served hello" in (tmp_path / "server.out").read_text()


# kube-perftest --------------------------------------------------------------------------------

# The spec fields kube-perftest's kinds accept, as listed in the reference
# (shared/reference/benchmark-formats.md, A.4 and the README's networking fields).
COMMON = {"hostNetwork", "networkName", "resources", "mtu"}
FIELDS = {
    "IPerf": {"image", "imagePullPolicy", "duration", "streams"},
    "MPIPingPong": {"image", "sshPort", "transport", "maxlog"},
    "RDMABandwidth": {"image", "mode", "iterations", "extraArgs", "qps"},
    "RDMALatency": {"image", "mode", "iterations", "extraArgs"},
    "Fio": {
        "fioPort",
        "volumeClaimTemplate",
        "numWorkers",
        "rw",
        "bs",
        "iodepth",
        "ioengine",
        "nrfiles",
        "rwmixread",
        "percentageRandom",
        "direct",
        "runtime",
        "numJobs",
        "size",
        "thread",
    },
}
REQUIRED = {"IPerf": {"duration", "streams"}}
VALUES: dict[str, Any] = {
    "transport": {"TCP", "RDMA"},
    "mode": {"read", "write"},
    "rw": {"read", "write", "randread", "randwrite", "rw,readwrite", "randrw"},
    "bs": re.compile(r"\d+(K|M|G|T|P)?"),
    "size": re.compile(r"\d+(K|M|G|T|P)?"),
    "runtime": re.compile(r"\d+(D|H|M|s|ms|us)?"),
    "direct": {0, 1},
    "ioengine": {"libaio"},
}
PERFTEST_CASES = [("iperf3", n, {"streams": 8, "duration": 30}) for n in NETWORKS] + [
    ("mpi_pingpong", "direct", {"max_log": 20, "transport": "rdma"}),
    ("mpi_pingpong", "bridge", {}),
    ("rdma_bandwidth", "direct", {"mode": "read", "qps": 512, "extra_args": ["--tclass=96"]}),
    ("rdma_latency", "host", {"iterations": 25}),
    ("fio", "bridge", {"rw": "readwrite", "bs": 1 << 20, "size": 10 << 30, "runtime": 30}),
]


def _check_fields(kind: str, fields: dict[str, Any]) -> None:
    assert set(fields) <= FIELDS[kind] | COMMON, set(fields) - FIELDS[kind] - COMMON
    assert REQUIRED.get(kind, set()) <= set(fields)
    for name, allowed in VALUES.items():
        if name in fields:
            if isinstance(allowed, re.Pattern):
                assert allowed.fullmatch(fields[name]), (name, fields[name])
            else:
                assert fields[name] in allowed, (name, fields[name])
    if "iterations" in fields:
        assert fields["iterations"] >= 5


@pytest.mark.parametrize(("kind", "network", "params"), PERFTEST_CASES)
def test_kube_perftest_objects_use_only_its_fields(
    kind: str, network: str, params: dict[str, Any]
) -> None:
    obj = to_kube_perftest(spec(kind, network, **params), "b1", "perf", network_name=NET)
    assert obj["apiVersion"] == "perftest.stackhpc.com/v1alpha1"
    assert obj["metadata"] == {"name": "b1", "namespace": "perf"}
    _check_fields(obj["kind"], obj["spec"])
    s = obj["spec"]
    assert s["hostNetwork"] is (network == "host")
    assert s.get("networkName") == (NET if network == "direct" else None)
    rdma = kind.startswith("rdma_") or params.get("transport") == "rdma"
    assert ("resources" in s) is rdma
    if rdma:
        assert s["resources"] == {"limits": {RDMA: 1}}


def test_kube_perftest_values() -> None:
    def conv(kind: str, **params: Any) -> dict[str, Any]:
        return dict(to_kube_perftest(spec(kind, **params), "b", network_name=NET)["spec"])

    assert conv("iperf3", streams=8, duration=30) | {} == {
        "hostNetwork": False,
        "duration": 30,
        "streams": 8,
    }
    assert conv("mpi_pingpong", max_log=20)["maxlog"] == 20
    assert conv("mpi_pingpong", transport="rdma")["transport"] == "RDMA"
    bw = conv("rdma_bandwidth", mode="read", qps=512, iterations=25, extra_args=["--tclass=96"])
    assert (bw["mode"], bw["qps"]) == ("read", 512)
    assert bw["iterations"] == 25 and bw["extraArgs"] == ["--tclass=96"]
    assert "qps" not in conv("rdma_latency")
    fio = conv("fio", rw="readwrite", bs=1 << 20, size=10 << 30, runtime=30, direct=0)
    assert (fio["rw"], fio["bs"], fio["size"], fio["runtime"], fio["direct"]) == (
        "rw,readwrite",
        "1M",
        "10G",
        "30s",
        0,
    )
    assert [fio_size(n) for n in (512, 4096, 1536, 1 << 40)] == ["512", "4K", "1536", "1T"]


def test_kube_perftest_refuses_what_it_would_measure_differently() -> None:
    with pytest.raises(ValueError, match=r"protocol='udp'.*iperf2 over TCP.*Use to_jobs"):
        to_kube_perftest(spec("iperf3", protocol="udp"), "b")
    with pytest.raises(ValueError, match=r"direction='reverse'.*omit=3"):
        to_kube_perftest(spec("iperf3", direction="reverse", omit=3), "b")
    with pytest.raises(ValueError, match="mode='send'"):
        to_kube_perftest(spec("rdma_bandwidth", mode="send"), "b")
    with pytest.raises(ValueError, match="ioengine='psync'"):
        to_kube_perftest(spec("fio", ioengine="psync"), "b")
    with pytest.raises(ValueError, match="repetitions=10"):
        to_kube_perftest(spec("mpi_pingpong", repetitions=10), "b")
    shaped = BenchmarkSpec.model_validate({"kind": "iperf3", "shaping": {"rate": "1gbit"}})
    with pytest.raises(ValueError, match="cannot shape"):
        to_kube_perftest(shaped, "b")
    slurm = BenchmarkSpec.model_validate(
        {
            "kind": "slurm_job",
            "platform": "hpc",
            "slurm_job": {"script": SLURM_SCRIPT, "nodes": [1]},
        }
    )
    with pytest.raises(ValueError, match="kube-perftest has no benchmark like slurm_job"):
        to_kube_perftest(slurm, "b")
    with pytest.raises(ValueError, match="needs network_name"):
        to_kube_perftest(spec("iperf3", "direct"), "b")


def kube_perftest_children(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The specs kube-perftest's operator makes for a BenchmarkSet, as the reference describes
    it (A.5): itertools.product over ``product``, then ``explicit`` appended (one empty
    permutation when neither is set), each deep-merged into the template with lists
    concatenated, each repeated ``repetitions`` times."""
    spec_ = obj["spec"]
    perms_ = spec_.get("permutations", {})
    product, explicit = perms_.get("product", {}), perms_.get("explicit", [])
    # Like the operator: an empty product still yields its one empty combination.
    perms = [dict(zip(product, c, strict=True)) for c in itertools.product(*product.values())]
    perms = perms + list(explicit) if (product or explicit) else [{}]
    count = max((_prod(len(v) for v in product.values()) if product else 0) + len(explicit), 1)
    assert count == len(perms), "the operator's count and its children disagree"

    def mergeconcat(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            return {
                k: mergeconcat(a[k], b[k]) if k in a and k in b else b.get(k, a.get(k))
                for k in {**a, **b}
            }
        if isinstance(a, list) and isinstance(b, list):
            return a + b
        return b

    return [
        mergeconcat(spec_["template"]["spec"], p)
        for p in perms
        for _ in range(spec_.get("repetitions", 1))
    ]


def _prod(ns: Any) -> int:
    out = 1
    for n in ns:
        out *= n
    return out


SETS = [
    {"product": {"iperf3.streams": [1, 2, 4], "network": ["bridge", "host"]}},
    {"product": {"network": ["bridge", "direct", "host"]}},
    {
        "product": {"rdma_bandwidth.mode": ["read", "write"]},
        "explicit": [{"rdma_bandwidth.qps": 8}],
    },
    {"explicit": [{"iperf3.streams": 2}, {"network": "host"}]},
    {"product": {"flavor": ["m1.small", "m1.large"]}},
    {},
]


@pytest.mark.parametrize("permutations", SETS, ids=[str(i) for i in range(len(SETS))])
def test_a_set_expands_on_the_kube_perftest_side_to_the_same_benchmarks(
    permutations: dict[str, Any],
) -> None:
    kind = (
        "rdma_bandwidth" if "rdma_bandwidth.mode" in permutations.get("product", {}) else "iperf3"
    )
    set_spec = BenchmarkSetSpec.model_validate(
        {
            "name": "wiring",
            "template": {"kind": kind, kind: {"iterations": 25} if kind != "iperf3" else {}},
            "permutations": permutations,
            "repetitions": 3,
        }
    )
    obj = set_to_kube_perftest(set_spec, "perf", network_name=NET)
    assert obj["kind"] == "BenchmarkSet" and obj["metadata"]["name"] == "wiring"
    template = obj["spec"]["template"]
    assert template["apiVersion"] == "perftest.stackhpc.com/v1alpha1"
    assert obj["spec"]["repetitions"] == 3
    ours = [
        to_kube_perftest(s, "x", network_name=NET)["spec"]
        for _, s in expand(set_spec)
        for _ in range(3)
    ]
    theirs = kube_perftest_children(obj)
    assert len(theirs) == len(ours) == len(expand(set_spec)) * 3
    assert theirs == ours  # the same benchmarks in the same order
    for child in theirs:
        _check_fields(template["kind"], child)
    for key in obj["spec"].get("permutations", {}).get("product", {}):
        assert "." not in key  # the operator's own field names, not ours


def test_a_set_keeps_a_product_when_each_key_moves_one_field() -> None:
    set_spec = BenchmarkSetSpec.model_validate(
        {
            "name": "streams",
            "template": {"kind": "iperf3", "iperf3": {"duration": 20}},
            "permutations": {"product": {"iperf3.streams": [1, 4], "network": ["bridge", "host"]}},
        }
    )
    obj = set_to_kube_perftest(set_spec)
    assert obj["spec"]["template"] == {
        "apiVersion": "perftest.stackhpc.com/v1alpha1",
        "kind": "IPerf",
        "spec": {"duration": 20},
    }
    assert obj["spec"]["permutations"] == {
        "product": {"streams": [1, 4], "hostNetwork": [False, True]}
    }


def test_a_set_that_kube_perftest_cannot_run_is_refused() -> None:
    mixed = BenchmarkSetSpec.model_validate(
        {
            "name": "mixed",
            "template": {"kind": "iperf3"},
            "permutations": {"product": {"kind": ["iperf3", "fio"]}},
        }
    )
    with pytest.raises(ValueError, match="runs one kind"):
        set_to_kube_perftest(mixed)
    udp = BenchmarkSetSpec.model_validate(
        {
            "name": "udp",
            "template": {"kind": "iperf3"},
            "permutations": {"product": {"iperf3.protocol": ["tcp", "udp"]}},
        }
    )
    with pytest.raises(ValueError, match=r"permutation 1 \(iperf3.protocol=udp\)"):
        set_to_kube_perftest(udp)
