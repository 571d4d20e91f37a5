"""Ray for real: a cluster started the way Ray's docs start one, joined with --address.

Two nodes, each its own ``ray start`` process tree (a head, and a worker node with its own
resources), every process pinned to 127.0.0.1. On Linux Ray rewrites ``127.0.0.1`` to the
address of the default route, so the cluster lives in a private network namespace that holds
nothing but the loopback interface, and in its own process namespace: when the test ends,
however it ends, the namespace's first process is killed and the kernel ends every other one
(the cluster's processes only, where ``ray stop --force`` would stop every Ray on the machine).
The test first checks that every node the cluster lists is at 127.0.0.1 and stops if not.

A small config runs through ``drprobe run --executor ray --address 127.0.0.1:PORT`` and its
result parts must be byte-identical to the local executor's; with the cluster's token
authentication on (Ray's default once a token exists), a second run has the Ray worker process
running a job SIGKILLed mid-way and must still end byte-identical, with no temporary file left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import TINY_JOBS, tiny_config

import drprobe
from drprobe.experiment.config import parse_config
from drprobe.experiment.runner import run_experiment
from drprobe.report.publish import publish_run

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")  # a dependency of Ray

pytestmark = pytest.mark.slow

PORT = 6379  # free: the namespace has its own ports
ADDRESS = f"127.0.0.1:{PORT}"
BIN = Path(sys.executable).parent
SRC = Path(drprobe.__file__).resolve().parents[1]
CONFIG = tiny_config("ray-cluster", resources={"cpus": 1, "gpus": 0})
IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")

# Run inside the namespace by its first process: bring up loopback, say so, then wait.
HOLDER = """
import fcntl, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0))[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP
open(sys.argv[1], "w").close()
time.sleep(3600)
"""
# The node list, read with Ray's public API (independent of drprobe's own checks).
LIST_NODES = f"""
import json, ray
ray.init(address={ADDRESS!r}, log_to_driver=False, configure_logging=False)
print(json.dumps([[n["NodeManagerAddress"], n["Alive"], n["Resources"]] for n in ray.nodes()]))
"""


class Namespace:
    """A network namespace with only loopback, and a process namespace, for one Ray cluster."""

    def __init__(self, home: Path) -> None:
        if not all(shutil.which(tool) for tool in ("unshare", "nsenter", "setpriv")):
            pytest.fail("the Ray cluster test needs unshare, nsenter and setpriv (util-linux) "
                        "to keep Ray on loopback")
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="drr", dir="/tmp"))  # short: Unix sockets
        ready = self.tmp / "ready"
        self.holder = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL",  # gone with this process, however it ends
             "unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child",
             sys.executable, "-c", HOLDER, str(ready)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.holder.poll() is not None or time.monotonic() > deadline:
                err = self.holder.stderr.read().decode() if self.holder.stderr else ""
                self.close()
                pytest.fail(f"cannot make a loopback-only namespace for Ray: {err.strip()}")
            time.sleep(0.05)
        self.init = psutil.Process(self.holder.pid).children()[0].pid

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(HOME=str(self.home), PYTHONPATH=str(SRC))
        env.update(extra)
        return env

    def run(self, args: list[str], env: dict[str, str], timeout: float = 180,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        cmd = ["nsenter", "-t", str(self.init), "-n", "-p", "-m", "--", *map(str, args)]
        return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def processes(self) -> list:
        """Every process in the namespace (seen from here)."""
        try:
            return psutil.Process(self.init).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def close(self) -> None:
        """End every process of the namespace: its first process dies, the kernel kills the
        rest (what ``ray stop --force`` would do there, but certain and at once)."""
        if self.holder.poll() is None:
            self.holder.kill()  # unshare --kill-child passes it on to the first process
            self.holder.wait(timeout=30)
        deadline = time.monotonic() + 30
        while hasattr(self, "init") and psutil.pid_exists(self.init):
            assert time.monotonic() < deadline, "the Ray namespace outlived its first process"
            time.sleep(0.1)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _start_cluster(ns: Namespace, token: bool) -> None:
    """``ray start --head`` and one ``ray start --address`` worker node, then check the nodes."""
    ray = BIN / "ray"
    if token:  # with a token on disk, `ray start --head` turns token authentication on
        got = ns.run([ray, "get-auth-token", "--generate"], ns.env())
        assert got.returncode == 0, got.stderr
    mode = {"RAY_AUTH_MODE": "token" if token else "disabled"}  # what each joining node needs
    head = ns.run([ray, "start", "--head", "--port", PORT, "--node-ip-address", "127.0.0.1",
                   "--temp-dir", ns.tmp / "r", "--num-cpus", 1, "--num-gpus", 0,
                   "--object-store-memory", 100_000_000, "--include-dashboard=false",
                   "--disable-usage-stats"], ns.env(**({} if token else mode)))
    assert head.returncode == 0, head.stderr[-2000:]
    assert ("Token authentication is enabled" in head.stderr) == token, head.stderr[-2000:]
    worker = ns.run([ray, "start", "--address", ADDRESS, "--node-ip-address", "127.0.0.1",
                     "--num-cpus", 1, "--num-gpus", 0, "--resources", '{"worker_node": 1}',
                     "--object-store-memory", 100_000_000, "--disable-usage-stats"],
                    ns.env(**mode))
    assert worker.returncode == 0, worker.stderr[-2000:]
    nodes: list = []
    for _ in range(30):  # the worker node registers within seconds
        listed = ns.run([BIN / "python", "-c", LIST_NODES], ns.env(**mode), timeout=120)
        assert listed.returncode == 0, listed.stderr[-2000:]
        nodes = json.loads(listed.stdout.strip().splitlines()[-1])
        if sum(alive for _, alive, _ in nodes) == 2:
            break
        time.sleep(1)
    if {address for address, _, _ in nodes} != {"127.0.0.1"}:
        pytest.fail(f"the Ray cluster lists nodes off loopback: {nodes}; stopping")
    assert sum(alive for _, alive, _ in nodes) == 2, nodes
    assert sum("worker_node" in res for _, _, res in nodes) == 1, nodes


def _drprobe_run(ns: Namespace, work: Path, out: Path, cache: Path, **env: str):
    args = [BIN / "python", "-m", "drprobe.cli", "run", work / "config.yaml", "--out", out,
            "--executor", "ray", "--address", ADDRESS, "--cache-dir", cache, "--no-progress"]
    return ns.run(args, ns.env(**env), timeout=600, cwd=work)


def _same_parts(a: Path, b: Path) -> None:
    """Every results and summary part of run ``a`` is byte-identical to run ``b``'s."""
    for kind in ("results", "summary"):
        names = sorted(p.name for p in (a / kind).glob("*.parquet"))
        assert names == [f"{job}.parquet" for job in TINY_JOBS]
        assert names == sorted(p.name for p in (b / kind).glob("*.parquet"))
        for name in names:
            assert (a / kind / name).read_bytes() == (b / kind / name).read_bytes(), (kind, name)
    assert (a / "summary.csv").read_bytes() == (b / "summary.csv").read_bytes()


def _no_temporary_files(out: Path) -> None:
    left = [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not left, left


def _only_loopback(text: str) -> None:
    """No address but 127.0.0.1 in ``text``, leaving out Ray's warning that this machine has
    no route out (it names the public resolvers it asked the kernel for a route to)."""
    lines = [line for line in text.splitlines() if "via external connectivity" not in line]
    assert set(IPV4.findall("\n".join(lines))) <= {"127.0.0.1"}, text[-2000:]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The config run by the local executor: the reference the Ray runs must equal."""
    work = tmp_path_factory.mktemp("ray-work")
    (work / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    out = work / "local"
    done = run_experiment(parse_config(CONFIG), out, cache_dir=work / "local-cache",
                          progress=False)
    publish_run(done.results, done.summary, out, plot=False)  # summary.csv, as the CLI writes it
    return work, out


@pytest.fixture
def namespace(tmp_path):
    ns = Namespace(tmp_path / "home")
    try:
        yield ns
    finally:
        ns.close()


def test_token_cluster_two_nodes_and_a_killed_worker(local_run, namespace, tmp_path):
    work, local = local_run
    ns = namespace
    _start_cluster(ns, token=True)

    # No token anywhere (another home): one line naming what to set, nothing written.
    out = tmp_path / "refused"
    got = _drprobe_run(ns, work, out, tmp_path / "refused-cache", HOME=str(tmp_path))
    lines = got.stderr.strip().splitlines()
    assert got.returncode == 2 and len(lines) == 1, got.stderr[-3000:]
    assert "no token was found" in lines[0] and "RAY_AUTH_TOKEN" in lines[0]
    assert ADDRESS in lines[0]
    _only_loopback(got.stderr)
    assert not out.exists() and not (tmp_path / "refused-cache").exists()
    # A wrong token (RAY_AUTH_TOKEN wins over ~/.ray/auth_token, as in Ray), or token mode
    # switched off by the user: each named as such.
    join = f"import ray; from drprobe.experiment.cluster import join; join(ray, {ADDRESS!r})"
    for env, expected in (({"RAY_AUTH_TOKEN": "0" * 32}, "rejected the token from RAY_AUTH_TOKEN;"),
                          ({"RAY_AUTH_MODE": "disabled"},
                           "requires token authentication but RAY_AUTH_MODE='disabled' here;")):
        got = ns.run([BIN / "python", "-c", join], ns.env(**env))
        assert got.returncode == 1, got.stderr[-3000:]
        last = got.stderr.strip().splitlines()[-1]
        assert last.startswith("drprobe.experiment.cluster.ClusterError: the Ray cluster at "
                               f"{ADDRESS!r} {expected}"), last

    # The token in ~/.ray/auth_token (where `ray start --head` found it) and no RAY_AUTH_MODE:
    # joined as given. The Ray worker process running a job is SIGKILLed once that job has
    # begun writing its features; Ray runs the job again and the parts come out the same.
    killed: list[int] = []
    cache, out = tmp_path / "cache", tmp_path / "ray"
    done = threading.Event()

    def kill_one_task() -> None:
        while not done.is_set():
            started = cache.is_dir() and any(p.name != ".runners.lock" for p in cache.iterdir())
            tasks = [p for p in ns.processes() if _is_task(p)]
            if started and tasks:
                parts = list((out / "results").glob("*.parquet"))
                os.kill(tasks[0].pid, signal.SIGKILL)
                killed.append(len(parts))
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_one_task, daemon=True)
    watcher.start()
    try:
        got = _drprobe_run(ns, work, out, cache)
    finally:
        done.set()
        watcher.join(timeout=10)
    assert killed and killed[0] < len(TINY_JOBS), killed  # killed before every job was complete
    assert got.returncode == 0, got.stderr[-3000:]
    _only_loopback(got.stdout + got.stderr)
    _same_parts(out, local)
    _no_temporary_files(out)


def test_cluster_without_token_authentication(local_run, namespace, tmp_path):
    work, local = local_run
    _start_cluster(namespace, token=False)
    got = _drprobe_run(namespace, work, tmp_path / "ray", tmp_path / "cache")
    assert got.returncode == 0, got.stderr[-3000:]
    _only_loopback(got.stdout + got.stderr)
    _same_parts(tmp_path / "ray", local)


def _is_task(process) -> bool:
    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return False
    return bool(cmdline) and cmdline[0].startswith("ray::_ray_task")
