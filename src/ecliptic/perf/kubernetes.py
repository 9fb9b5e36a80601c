"""A benchmark exported to Kubernetes, so the same spec runs on a real cluster.

Two forms:

- :func:`to_kube_perftest` / :func:`set_to_kube_perftest`: objects of the kube-perftest
  operator (``perftest.stackhpc.com/v1alpha1``: ``IPerf``, ``MPIPingPong``, ``RDMABandwidth``,
  ``RDMALatency``, ``Fio``, ``BenchmarkSet``). The operator runs its own images and command
  lines, so only what it has a field for is carried; a parameter that would change what is
  measured and has no field (iperf3 over UDP: the operator runs iperf2 over TCP) is refused
  with a ValueError naming it, rather than silently measuring something else.
- :func:`to_jobs`: plain ``batch/v1`` Jobs and headless Services that need no operator and
  run the command lines Ecliptic's own kinds run, so the client's log (``kubectl logs
  job/NAME-client``) is the output Ecliptic's parser for the kind reads.

Network modes map to pods as follows. ``bridge``: the pod network (the CNI's veth and
bridge or overlay). ``direct``: a second interface ``net1`` from a Multus
NetworkAttachmentDefinition (``network_name``, e.g. a macvlan on an SR-IOV VF), named in the
pod annotation ``k8s.v1.cni.cncf.io/networks``; the benchmark traffic is bound to it.
``host``: ``hostNetwork: true``, the node's own stack; unlike the local cloud, where both ends
of ``host`` share one server, the two pods are kept on different nodes like every two-ended
benchmark here (required pod anti-affinity), so ``host`` measures node to node without a CNI.

How the two ends find each other (:func:`to_jobs`): the server pod learns its own address
on the measured network (the pod IP from the downward API, or ``net1``'s address), starts
the tool, and once the tool listens serves that address over HTTP on port 5200 (the
"beacon") on the pod network, reached through the headless Service. The client polls the
beacon, then runs the tool against the address it was given; the tool's traffic thus goes
over ``net1`` in ``direct`` mode, which the Service's DNS name (always the pod network) would
not. For MPI the launcher makes an SSH key pair for the run and serves the public key the
same way; the worker's sshd lets in only that key.

This module is pure: plain data in, plain data (and YAML text) out.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ecliptic.perf.kinds import registry
from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec, expand

API_VERSION = "perftest.stackhpc.com/v1alpha1"
DEFAULT_RDMA_RESOURCE = "rdma/rdma_shared_device_a"
DEFAULT_IMAGE = "docker.io/library/debian:bookworm-slim"
"""The image of :func:`to_jobs`' pods. The plain Debian image does NOT carry the tools: give
``image=`` an image built from it with the ``perf`` image's packages and files
(``src/ecliptic/data/images/perf.yaml``: iperf3, fio, perftest, Open MPI with
``/usr/local/bin/mpi-pingpong``, openssh-server and -client) plus ``iproute2`` and
``python3``, which the wrapper scripts use (addresses, the beacon)."""
DEFAULT_TTL_S = 3600
"""Finished Jobs (and their pods' logs) are deleted after this long: collect the results."""

BEACON_PORT = 5200
IPERF3_PORT = 5201
PERFTEST_PORT = 18515
SSH_PORT = 2222
MPI_PROGRAM = "/usr/local/bin/mpi-pingpong"
DIRECT_INTERFACE = "net1"
MULTUS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
_FIRST_ADDRESS = shlex.quote('{split($4, a, "/"); print a[1]; exit}')
_INTERFACE_OF = shlex.quote('{split($4, b, "/"); if (b[1] == a) { print $2; exit } }')
_LABEL_INSTANCE = "app.kubernetes.io/instance"
_LABEL_COMPONENT = "app.kubernetes.io/component"
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,44}[a-z0-9])?$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NETWORK_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
)


# kube-perftest ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PerftestKind:
    """How one of our kinds becomes a kube-perftest object."""

    kind: str
    """The kube-perftest kind."""
    fields: Callable[[dict[str, Any], list[str]], dict[str, Any]]
    """Its spec fields from our parameters; what cannot be carried is appended to the list."""
    carried: frozenset[str]
    """Our parameters the function reads (any other must be at its default)."""
    rdma: Callable[[dict[str, Any]], bool]
    """Whether the pods need an RDMA device."""


def _refuse_unless(problems: list[str], p: dict[str, Any], name: str, ok: object, why: str) -> None:
    if p.get(name) != ok:
        problems.append(f"{name}={p.get(name)!r} ({why})")


def _iperf(p: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    # kube-perftest's IPerf runs iperf2 (`iperf --client … --time D --parallel N`) over TCP,
    # forward only: UDP, reverse/bidir, a target bitrate, omitted seconds and the buffer
    # length have no field. iperf2's and iperf3's figures for the same link are close but
    # not identical (different defaults for buffers and reporting).
    why = "kube-perftest's IPerf runs iperf2 over TCP with only duration and streams"
    _refuse_unless(problems, p, "protocol", "tcp", why)
    _refuse_unless(problems, p, "direction", "forward", why)
    for name in ("bitrate", "length"):
        _refuse_unless(problems, p, name, None, why)
    _refuse_unless(problems, p, "omit", 0, why)
    return {"duration": p["duration"], "streams": p["streams"]}


def _pingpong(p: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    # The operator runs IMB-MPI1 PingPong, which chooses its repetitions per size itself.
    _refuse_unless(problems, p, "repetitions", 1000, "IMB-MPI1 chooses its own repetitions")
    return {"transport": str(p["transport"]).upper(), "maxlog": p["max_log"]}


def _rdma(p: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    # The operator always sweeps every size (-a) for a number of iterations.
    if p.get("mode") not in ("read", "write"):
        problems.append(
            f"mode={p.get('mode')!r} (kube-perftest runs ib_read_* and ib_write_* only)"
        )
    why = "kube-perftest always sweeps every size (-a) for a number of iterations"
    for name in ("size", "duration"):
        _refuse_unless(problems, p, name, None, why)
    out: dict[str, Any] = {"mode": p.get("mode"), "iterations": p["iterations"]}
    if p.get("extra_args"):
        out["extraArgs"] = list(p["extra_args"])
    if "qps" in p:
        out["qps"] = p["qps"]
    return out


def _fio(p: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    rw = {"readwrite": "rw,readwrite"}.get(p["rw"], p["rw"])
    if p.get("ioengine") != "libaio":
        problems.append(f"ioengine={p.get('ioengine')!r} (kube-perftest's Fio runs libaio only)")
    return {
        "rw": rw,
        "bs": fio_size(p["bs"]),
        "iodepth": p["iodepth"],
        "size": fio_size(p["size"]),
        "runtime": f"{p['runtime']}s",
        "numJobs": p["numjobs"],
        "direct": int(p["direct"]),
        "ioengine": "libaio",
        "rwmixread": p["rwmixread"],
    }


KUBE_PERFTEST: dict[str, _PerftestKind] = {
    "iperf3": _PerftestKind(
        "IPerf",
        _iperf,
        frozenset({"protocol", "duration", "streams", "direction", "bitrate", "omit", "length"}),
        lambda p: False,
    ),
    "mpi_pingpong": _PerftestKind(
        "MPIPingPong",
        _pingpong,
        frozenset({"max_log", "repetitions", "transport"}),
        lambda p: p.get("transport") == "rdma",
    ),
    "rdma_bandwidth": _PerftestKind(
        "RDMABandwidth",
        _rdma,
        frozenset({"mode", "iterations", "size", "duration", "extra_args", "qps"}),
        lambda p: True,
    ),
    "rdma_latency": _PerftestKind(
        "RDMALatency",
        _rdma,
        frozenset({"mode", "iterations", "size", "duration", "extra_args"}),
        lambda p: True,
    ),
    "fio": _PerftestKind(
        "Fio",
        _fio,
        frozenset(
            {"rw", "bs", "iodepth", "size", "runtime", "numjobs", "direct", "ioengine", "rwmixread"}
        ),
        lambda p: False,
    ),
}
"""Our kinds kube-perftest has a counterpart for. ``slurm_job`` has none (it runs on a Slurm
platform, not in pods)."""


def to_kube_perftest(
    spec: BenchmarkSpec,
    name: str,
    namespace: str = "default",
    *,
    network_name: str | None = None,
    rdma_resource: str = DEFAULT_RDMA_RESOURCE,
) -> dict[str, Any]:
    """The kube-perftest object that runs ``spec`` as ``name``; ValueError when it cannot.

    ``network_name`` (``namespace/name`` of a Multus network) is required for ``direct``;
    ``rdma_resource`` is the device plugin's resource the RDMA kinds (and MPI over RDMA) ask
    for. Our servers' image, flavor, lease and platform have no meaning there and are not
    carried; link shaping is refused (the operator cannot shape)."""
    _check_names(name, namespace)
    return {
        "apiVersion": API_VERSION,
        "kind": _perftest_kind(spec).kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": _perftest_spec(spec, network_name, rdma_resource),
    }


def _perftest_kind(spec: BenchmarkSpec) -> _PerftestKind:
    try:
        return KUBE_PERFTEST[spec.kind]
    except KeyError:
        raise ValueError(
            f"kube-perftest has no benchmark like {spec.kind}; it can run: "
            f"{', '.join(sorted(KUBE_PERFTEST))}"
        ) from None


def _perftest_spec(
    spec: BenchmarkSpec, network_name: str | None, rdma_resource: str
) -> dict[str, Any]:
    mapping = _perftest_kind(spec)
    p = dict(spec.params)
    problems: list[str] = []
    fields = mapping.fields(p, problems)
    defaults = _defaults(spec.kind)
    for key in sorted(set(p) - mapping.carried):
        if key in defaults and p[key] != defaults[key]:
            problems.append(f"{key}={p[key]!r} (no kube-perftest field)")
    if spec.shaping is not None:
        problems.append("shaping (kube-perftest cannot shape a link)")
    if problems:
        raise ValueError(
            f"{spec.kind} cannot be carried to kube-perftest's {mapping.kind}: "
            f"{'; '.join(problems)}. Use to_jobs, which runs Ecliptic's own command lines."
        )
    out: dict[str, Any] = {"hostNetwork": spec.network == "host"}
    if spec.network == "direct":
        out["networkName"] = _network(network_name)
    if mapping.rdma(p):
        out["resources"] = {"limits": {_resource(rdma_resource): 1}}
    return out | fields


def _defaults(kind: str) -> dict[str, Any]:
    try:
        return registry.find(kind).params.model_validate({}).model_dump(mode="json")
    except Exception:  # a kind with required parameters: every value counts as given
        return {}


def set_to_kube_perftest(
    set_spec: BenchmarkSetSpec,
    namespace: str = "default",
    *,
    network_name: str | None = None,
    rdma_resource: str = DEFAULT_RDMA_RESOURCE,
) -> dict[str, Any]:
    """The kube-perftest ``BenchmarkSet`` that runs ``set_spec``: the same benchmarks, in the
    same order, as many times.

    Each of our permutations is expanded and carried as above (ValueError naming it
    otherwise). What all of them share becomes the template; what varies becomes the
    operator's permutations, as a ``product`` over the operator's field names when ours was
    a product whose every key moves exactly one of its fields (``iperf3.streams`` →
    ``streams``, ``network: [bridge, host]`` → ``hostNetwork``), else as ``explicit``
    entries, one per permutation (``network: [bridge, direct]`` changes two fields)."""
    _check_names(set_spec.name, namespace)
    pairs = expand(set_spec)
    kinds = {_perftest_kind(spec).kind for _, spec in pairs}
    if len(kinds) > 1:
        raise ValueError(
            f"a kube-perftest set runs one kind; {set_spec.name} permutes between "
            f"{', '.join(sorted(kinds))}"
        )
    specs = []
    for i, (perm, spec) in enumerate(pairs):
        try:
            specs.append(_perftest_spec(spec, network_name, rdma_resource))
        except ValueError as e:
            label = ", ".join(f"{k}={v}" for k, v in perm.items()) or "the template"
            raise ValueError(f"permutation {i} ({label}): {e}") from None
    template = {k: v for k, v in specs[0].items() if all(k in s and s[k] == v for s in specs[1:])}
    deltas = [{k: v for k, v in s.items() if k not in template} for s in specs]
    permutations = _permutations(set_spec, deltas, template)
    out: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "BenchmarkSet",
        "metadata": {"name": set_spec.name, "namespace": namespace},
        "spec": {
            "template": {"apiVersion": API_VERSION, "kind": kinds.pop(), "spec": template},
            "repetitions": set_spec.repetitions,
        },
    }
    if permutations:
        out["spec"]["permutations"] = permutations
    return out


def _permutations(
    set_spec: BenchmarkSetSpec, deltas: list[dict[str, Any]], template: dict[str, Any]
) -> dict[str, Any]:
    if len(deltas) == 1 and not deltas[0]:
        return {}
    ours = set_spec.permutations
    keys = list(ours.product)
    sizes = [len(ours.product[k]) for k in keys]
    count = 1
    for n in sizes:
        count *= n
    if not keys:
        count = 0
    product = _as_product(keys, sizes, deltas[:count]) if count else None
    if product is not None:
        explicit = deltas[count:]
    else:
        product, explicit = {}, deltas
    if not product and explicit:
        # The operator yields one empty permutation for an empty product even when there are
        # explicit ones (while counting none), so the first is given as a one-value product.
        first, explicit = explicit[0], explicit[1:]
        product = {k: [v] for k, v in first.items()} or {"hostNetwork": [template["hostNetwork"]]}
    out: dict[str, Any] = {"product": product}
    if explicit:
        out["explicit"] = explicit
    return out


def _as_product(
    keys: list[str], sizes: list[int], deltas: list[dict[str, Any]]
) -> dict[str, list[Any]] | None:
    """The operator's product that yields ``deltas`` in order, if one field follows each key."""
    combos = list(_indices(sizes))
    fields = list(dict.fromkeys(f for d in deltas for f in d))
    if any(f not in d for d in deltas for f in fields):
        return None
    owner: dict[int, tuple[str, list[Any]]] = {}
    for f in fields:
        for j, size in enumerate(sizes):
            values: list[Any] = [None] * size
            seen = [False] * size
            consistent = True
            for combo, d in zip(combos, deltas, strict=True):
                at = combo[j]
                if seen[at] and values[at] != d[f]:
                    consistent = False
                    break
                values[at], seen[at] = d[f], True
            if consistent:
                if j in owner:
                    return None  # one key moves two fields: not a product of fields
                owner[j] = (f, values)
                break
        else:
            return None  # the field follows no single key
    if sorted(owner) != list(range(len(keys))):
        return None  # a key that moves nothing (a flavor, say) has no field to vary
    return dict(owner[j] for j in range(len(keys)))


def _indices(sizes: list[int]) -> Sequence[tuple[int, ...]]:
    return list(itertools.product(*(range(n) for n in sizes)))


def fio_size(n: int) -> str:
    """Bytes as fio and kube-perftest write them: ``4K``, ``256M`` (binary multiples)."""
    for suffix, shift in (("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


# Plain Jobs ------------------------------------------------------------------------------------


class _Raw(str):
    """Shell text put into a command line as it is (a variable), not quoted."""


def _sh(argv: Sequence[str]) -> str:
    return " ".join(a if isinstance(a, _Raw) else shlex.quote(a) for a in argv)


PEER = _Raw('"$PEER"')
ADDR = _Raw('"$ADDR"')


def iperf3_client(p: dict[str, Any], peer: str) -> list[str]:
    """iperf3's client command line, as the ``iperf3`` kind runs it."""
    argv = ["iperf3", "--client", peer, "--port", str(IPERF3_PORT), "--json"]
    argv += ["--time", str(p["duration"]), "--parallel", str(p["streams"])]
    if p["protocol"] == "udp":
        argv.append("--udp")
    if p["direction"] == "reverse":
        argv.append("--reverse")
    elif p["direction"] == "bidir":
        argv.append("--bidir")
    if p.get("bitrate") is not None:
        argv += ["--bitrate", str(p["bitrate"])]
    if p.get("omit"):
        argv += ["--omit", str(p["omit"])]
    if p.get("length") is not None:
        argv += ["--length", str(p["length"])]
    return argv


def perftest(kind: str, p: dict[str, Any]) -> list[str]:
    """perftest's command line for both ends (the client adds the server's address), as the
    RDMA kinds run it: rdma_cm (``-R``), which also picks the device by the address."""
    suffix = "bw" if kind == "rdma_bandwidth" else "lat"
    argv = [f"ib_{p['mode']}_{suffix}", "-R", "-F", "-p", str(PERFTEST_PORT)]
    argv += ["-s", str(p["size"])] if p.get("size") is not None else ["-a"]
    if p.get("duration") is not None:
        argv += ["-D", str(p["duration"])]
    else:
        argv += ["-n", str(p["iterations"])]
    argv += list(p.get("extra_args") or [])
    if suffix == "bw":
        argv += ["--report_gbits", "-q", str(p["qps"])]
    return argv


def fio_command(p: dict[str, Any], path: str) -> list[str]:
    """fio's command line, as the ``fio`` kind runs it."""
    argv = ["fio", "--name=ecliptic", f"--filename={path}", "--output-format=json"]
    argv += ["--group_reporting", "--time_based", f"--runtime={p['runtime']}"]
    argv += [f"--rw={p['rw']}", f"--bs={p['bs']}", f"--iodepth={p['iodepth']}"]
    argv += [f"--size={p['size']}", f"--numjobs={p['numjobs']}", f"--direct={p['direct']}"]
    argv.append(f"--ioengine={p['ioengine']}")
    if p["rw"] in ("readwrite", "randrw"):
        argv.append(f"--rwmixread={p['rwmixread']}")
    return argv


def mpirun(p: dict[str, Any]) -> list[str]:
    """The launcher's mpirun line, as the ``mpi_pingpong`` kind runs it: rank 0 here, rank 1
    in the worker, traffic on the measured interfaces, ssh with the run's key."""
    argv = ["mpirun", "--allow-run-as-root", "-np", "2", "--bind-to", "none"]
    argv += ["--host", _Raw('"$ADDR:1,$PEER:1"')]
    argv += ["--mca", "oob_tcp_if_include", _Raw('"$IFACES"')]
    if p["transport"] == "tcp":
        argv += ["--mca", "pml", "ob1", "--mca", "osc", "^ucx"]
        argv += ["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", _Raw('"$IFACES"')]
    else:
        argv += ["--mca", "pml", "ucx", "--mca", "osc", "ucx", "--mca", "btl", "^openib"]
        argv += ["-x", "UCX_TLS=self,rc_x,ud_x"]
    argv += ["--mca", "plm_rsh_agent", "ssh", "--mca", "plm_rsh_args", " ".join(_SSH_OPTIONS)]
    argv += [MPI_PROGRAM, "-msglog", str(p["max_log"]), "-iter", str(p["repetitions"])]
    return argv


_MPI_DIR = "/run/ecliptic-mpi"
_SSH_OPTIONS = (
    f"-p {SSH_PORT}",
    f"-i {_MPI_DIR}/id_ed25519",
    # The worker's host key is made for the run and known to nobody; the run's own key is
    # what is authenticated, and nothing of the run outlives it.
    "-o StrictHostKeyChecking=no",
    "-o UserKnownHostsFile=/dev/null",
    "-o BatchMode=yes",
    "-o LogLevel=ERROR",
)


@dataclass(frozen=True)
class _JobsKind:
    """How one of our kinds runs as plain Jobs."""

    server: Callable[[dict[str, Any]], list[str]] | None
    """The server end's script lines after its address is known (None: one Job)."""
    client: Callable[[dict[str, Any]], list[str]]
    """The client's script lines (``$SERVER`` names the server's Service)."""
    ports: tuple[int, ...]
    """The server's ports (besides the beacon)."""
    rdma: Callable[[dict[str, Any]], bool]
    """Whether the pods need an RDMA device."""
    launcher_service: bool = False
    """Whether the client serves something to the server (MPI: its public key)."""


def _beacon(files: str) -> list[str]:
    return [
        "mkdir -p /run/ecliptic-beacon",
        files,
        f"python3 -m http.server {BEACON_PORT} --directory /run/ecliptic-beacon >/dev/null 2>&1 &",
        "BEACON=$!",
    ]


def _wait_for(log: str, marker: str, pid: str) -> list[str]:
    return [
        f"until grep -q {shlex.quote(marker)} {log}; do",
        f'  kill -0 "{pid}" 2>/dev/null || {{ cat {log} >&2; exit 1; }}',
        "  sleep 0.2",
        "done",
    ]


def _fetch(var: str, host: str, path: str) -> list[str]:
    """``var`` := the beacon's ``path`` at ``$host``, polled until it answers."""
    url = f'"http://${host}:{BEACON_PORT}/{path}"'
    get = (
        "import sys, urllib.request; "
        "print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().strip())"
    )
    return [
        "i=0",
        f'until {var}=$(python3 -c {shlex.quote(get)} {url} 2>/dev/null) && [ -n "${var}" ]; do',
        "  i=$((i + 1))",
        f'  [ "$i" -lt 600 ] || {{ echo "nothing at {url[1:-1]} after 10 minutes" >&2; exit 1; }}',
        "  sleep 1",
        "done",
    ]


def _tool_server(argv: list[str], marker: str) -> list[str]:
    """Start the server tool, wait until it listens, publish the address, wait for the end."""
    return [
        f"{_sh(argv)} >/tmp/server.log 2>&1 &",
        "TOOL=$!",
        *_wait_for("/tmp/server.log", marker, "$TOOL"),
        *_beacon('printf "%s\\n" "$ADDR" >/run/ecliptic-beacon/address'),
        'status=0; wait "$TOOL" || status=$?',
        'kill "$BEACON" 2>/dev/null || true',
        "cat /tmp/server.log",
        'exit "$status"',
    ]


def _iperf3_server(p: dict[str, Any]) -> list[str]:
    argv = ["iperf3", "--server", "--one-off", "--port", str(IPERF3_PORT), "--bind", ADDR]
    return _tool_server(argv, "Server listening")


def _perftest_server(kind: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda p: _tool_server(perftest(kind, p), "Waiting for client")


_PEER = _fetch("PEER", "SERVER", "address")


def _iperf3_client(p: dict[str, Any]) -> list[str]:
    return [*_PEER, "exec " + _sh(iperf3_client(p, PEER))]


def _perftest_client(kind: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda p: [*_PEER, "exec " + _sh([*perftest(kind, p), PEER])]


def _mpi_worker(p: dict[str, Any]) -> list[str]:
    sshd_config = "\\n".join(
        [
            f"Port {SSH_PORT}",
            "ListenAddress %s",
            f"HostKey {_MPI_DIR}/host_ed25519",
            f"AuthorizedKeysFile {_MPI_DIR}/authorized_keys",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PidFile none",
        ]
    )
    return [
        f"mkdir -p -m 0700 {_MPI_DIR} && install -d -m 0755 /run/sshd",
        *_fetch("KEY", "LAUNCHER", "id_ed25519.pub"),
        f'(umask 077; printf "%s\\n" "$KEY" >{_MPI_DIR}/authorized_keys)',
        f"ssh-keygen -q -t ed25519 -N '' -f {_MPI_DIR}/host_ed25519",
        f'printf "{sshd_config}\\n" "$ADDR" >{_MPI_DIR}/sshd_config',
        f"/usr/sbin/sshd -D -e -f {_MPI_DIR}/sshd_config >/tmp/sshd.log 2>&1 &",
        "SSHD=$!",
        *_wait_for("/tmp/sshd.log", "Server listening", "$SSHD"),
        *_beacon(
            'printf "%s\\n" "$ADDR" >/run/ecliptic-beacon/address && '
            'printf "%s\\n" "$IFACE" >/run/ecliptic-beacon/interface'
        ),
        "# The launcher ends the run by creating this file over ssh.",
        f'until [ -e {_MPI_DIR}/done ]; do kill -0 "$SSHD" || exit 1; sleep 1; done',
        'kill "$SSHD" "$BEACON" 2>/dev/null || true',
    ]


def _mpi_launcher(p: dict[str, Any]) -> list[str]:
    ssh = _sh(["ssh", *" ".join(_SSH_OPTIONS).split(), PEER, f"touch {_MPI_DIR}/done"])
    return [
        f"mkdir -p -m 0700 {_MPI_DIR}",
        f"ssh-keygen -q -t ed25519 -N '' -C ecliptic-mpi -f {_MPI_DIR}/id_ed25519",
        *_beacon(f"cp {_MPI_DIR}/id_ed25519.pub /run/ecliptic-beacon/"),
        *_PEER,
        *_fetch("PEER_IFACE", "SERVER", "interface"),
        'IFACES=$(printf "%s\\n%s\\n" "$IFACE" "$PEER_IFACE" | sort -u | paste -sd, -)',
        f"status=0; {_sh(mpirun(p))} || status=$?",
        f"{ssh} || true",
        'exit "$status"',
    ]


def _fio_client(p: dict[str, Any]) -> list[str]:
    path = "/data/ecliptic-fio"
    return [
        f"status=0; {_sh(fio_command(p, path))} || status=$?",
        f"rm -f {path}",
        'exit "$status"',
    ]


JOBS: dict[str, _JobsKind] = {
    "iperf3": _JobsKind(_iperf3_server, _iperf3_client, (IPERF3_PORT,), lambda p: False),
    "mpi_pingpong": _JobsKind(
        _mpi_worker, _mpi_launcher, (SSH_PORT,), lambda p: p.get("transport") == "rdma", True
    ),
    "rdma_bandwidth": _JobsKind(
        _perftest_server("rdma_bandwidth"),
        _perftest_client("rdma_bandwidth"),
        (PERFTEST_PORT,),
        lambda p: True,
    ),
    "rdma_latency": _JobsKind(
        _perftest_server("rdma_latency"),
        _perftest_client("rdma_latency"),
        (PERFTEST_PORT,),
        lambda p: True,
    ),
    "fio": _JobsKind(None, _fio_client, (), lambda p: False),
}
"""Our kinds that run as plain Jobs. ``slurm_job`` does not: it needs a Slurm platform."""


def to_jobs(
    spec: BenchmarkSpec,
    name: str,
    namespace: str = "default",
    *,
    network_name: str | None = None,
    rdma_resource: str = DEFAULT_RDMA_RESOURCE,
    image: str = DEFAULT_IMAGE,
    ttl_s: int = DEFAULT_TTL_S,
) -> list[dict[str, Any]]:
    """Plain Kubernetes objects that run ``spec`` with no operator; ValueError when they
    cannot (``slurm_job``, ``direct`` without ``network_name``).

    Two-ended kinds: a headless Service ``NAME`` and Jobs ``NAME-server`` and
    ``NAME-client`` on different nodes (MPI adds a Service ``NAME-client`` for the run's
    public key). fio: one Job ``NAME-client`` on an ``emptyDir`` (the node's disk). The
    client's log is the tool's output, as Ecliptic's parser for the kind reads it. Every Job
    runs once (``backoffLimit: 0``), is stopped after the spec's ``timeout_s`` and deleted
    ``ttl_s`` after it finished. ``image`` must carry the tools (see :data:`DEFAULT_IMAGE`).
    Link shaping is applied with ``tc … tbf`` on the measured interface in each pod, which
    therefore gets ``NET_ADMIN``."""
    _check_names(name, namespace)
    try:
        kind = JOBS[spec.kind]
    except KeyError:
        raise ValueError(
            f"{spec.kind} does not run as plain Kubernetes Jobs; these do: "
            f"{', '.join(sorted(JOBS))}"
        ) from None
    if spec.network == "direct":
        _network(network_name)
    if not 0 <= ttl_s <= 365 * 86400:
        raise ValueError("ttl_s must be between 0 and a year")
    p = dict(spec.params)
    rdma = _resource(rdma_resource) if kind.rdma(p) else None
    pod = _PodMaker(spec, name, namespace, network_name, rdma, image, ttl_s)
    hosts = [f"SERVER={name}.{namespace}.svc"]
    objs: list[dict[str, Any]] = []
    if kind.server is not None:
        objs.append(_service(name, name, namespace, "server", (BEACON_PORT, *kind.ports)))
        if kind.launcher_service:
            launcher = f"{name}-client"
            objs.append(_service(launcher, name, namespace, "client", (BEACON_PORT,)))
            hosts.append(f"LAUNCHER={launcher}.{namespace}.svc")
        objs.append(pod.job("server", [*hosts, *kind.server(p)]))
    objs.append(pod.job("client", [*hosts, *kind.client(p)]))
    return objs


@dataclass(frozen=True)
class _PodMaker:
    spec: BenchmarkSpec
    name: str
    namespace: str
    network_name: str | None
    rdma: str | None
    image: str
    ttl_s: int

    def job(self, component: str, lines: list[str]) -> dict[str, Any]:
        labels = {
            "app.kubernetes.io/name": "ecliptic-perf",
            _LABEL_INSTANCE: self.name,
            _LABEL_COMPONENT: component,
        }
        script = "\n".join(["set -eu", *self._address(), *self._shaping(), *lines]) + "\n"
        container: dict[str, Any] = {
            "name": "benchmark",
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", script],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        }
        caps = (["IPC_LOCK"] if self.rdma else []) + (["NET_ADMIN"] if self.spec.shaping else [])
        if caps:
            # IPC_LOCK: RDMA registers memory by pinning pages, which needs mlock.
            container["securityContext"] = {"capabilities": {"add": caps}}
        if self.rdma:
            container["resources"] = {"requests": {self.rdma: "1"}, "limits": {self.rdma: "1"}}
        pod: dict[str, Any] = {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "enableServiceLinks": False,
            "containers": [container],
        }
        annotations: dict[str, str] = {}
        if self.spec.network == "host":
            pod["hostNetwork"] = True
            pod["dnsPolicy"] = "ClusterFirstWithHostNet"  # still resolve the Service
        elif self.spec.network == "direct":
            ns, _, net = _network(self.network_name).rpartition("/")
            annotations[MULTUS_ANNOTATION] = json.dumps(
                [{"name": net, "namespace": ns or self.namespace, "interface": DIRECT_INTERFACE}]
            )
        if self.spec.kind == "fio":
            container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
            pod["volumes"] = [{"name": "data", "emptyDir": {}}]
        else:
            # The two ends on different nodes: otherwise the traffic never leaves the node.
            pod["affinity"] = {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "labelSelector": {"matchLabels": {_LABEL_INSTANCE: self.name}},
                            "topologyKey": "kubernetes.io/hostname",
                        }
                    ]
                }
            }
        meta: dict[str, Any] = {"labels": labels}
        if annotations:
            meta["annotations"] = annotations
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{self.name}-{component}",
                "namespace": self.namespace,
                "labels": labels,
            },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": max(1, int(self.spec.timeout_s)),
                "ttlSecondsAfterFinished": self.ttl_s,
                "template": {"metadata": meta, "spec": pod},
            },
        }

    def _address(self) -> list[str]:
        """``ADDR`` and ``IFACE``: this pod's address and interface on the measured network."""
        if self.spec.network == "direct":
            return [
                f"IFACE={DIRECT_INTERFACE}",
                f'ADDR=$(ip -4 -o addr show dev "$IFACE" | awk {_FIRST_ADDRESS})',
                '[ -n "$ADDR" ] || { echo "no IPv4 address on $IFACE" >&2; exit 1; }',
            ]
        return [
            'ADDR="$POD_IP"',
            f'IFACE=$(ip -4 -o addr show | awk -v a="$ADDR" {_INTERFACE_OF})',
        ]

    def _shaping(self) -> list[str]:
        s = self.spec.shaping
        if s is None:
            return []
        tbf = ["tc", "qdisc", "replace", "dev", _Raw('"$IFACE"'), "root", "tbf"]
        tbf += ["rate", f"{s.rate}bit", "burst", str(s.burst), "latency", f"{s.latency_ms:g}ms"]
        return [_sh(tbf)]


def _service(
    name: str, instance: str, namespace: str, component: str, ports: Sequence[int]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "ecliptic-perf", _LABEL_INSTANCE: instance},
        },
        "spec": {
            # Headless: the name resolves to the pod itself, which has no readiness probe
            # (a probe's connection would be taken for a client by one-off servers).
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {_LABEL_INSTANCE: instance, _LABEL_COMPONENT: component},
            "ports": [{"name": f"p{port}", "port": port, "protocol": "TCP"} for port in ports],
        },
    }


def _check_names(name: str, namespace: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{name!r} is not a benchmark name for Kubernetes: lower-case letters, digits and "
            "'-', starting with a letter, at most 46 characters (room for '-server')"
        )
    if not _NAMESPACE_RE.match(namespace):
        raise ValueError(f"{namespace!r} is not a Kubernetes namespace name")


def _network(network_name: str | None) -> str:
    if network_name is None:
        raise ValueError(
            "network 'direct' needs network_name: the Multus NetworkAttachmentDefinition of the "
            "direct network, as 'namespace/name' (e.g. 'default/shared-network')"
        )
    if not _NETWORK_RE.match(network_name):
        raise ValueError(f"{network_name!r} is not a 'namespace/name' of a Multus network")
    return network_name


def _resource(name: str) -> str:
    if not re.fullmatch(
        r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", name
    ):
        raise ValueError(
            f"{name!r} is not a device plugin resource such as 'rdma/hca_shared_devices_a'"
        )
    return name


# YAML ------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts) as literal blocks, as people write them; no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objs: Sequence[dict[str, Any]]) -> str:
    """The objects as one multi-document YAML text (``kubectl apply -f -``)."""
    return yaml.dump_all(list(objs), Dumper=_Dumper, sort_keys=False, explicit_start=True)
