"""The Ray executor on a local Ray that drprobe starts in this process (loopback only), and
the cluster address / token handling that needs no cluster. A cluster started with
``ray start`` on two nodes is in test_ray_cluster.py."""

from __future__ import annotations

import itertools
import re
import socket
from pathlib import Path

import pytest
import yaml
from helpers import TINY_JOBS, tiny_config

from drprobe.cli import main
from drprobe.experiment import cluster
from drprobe.experiment.config import parse_config
from drprobe.experiment.runner import run_experiment

ray = pytest.importorskip("ray")
services = pytest.importorskip("ray._private.services")

CONFIG = tiny_config("ray", resources={"cpus": 1, "gpus": 0})


@pytest.mark.slow
def test_local_ray_stays_on_loopback_and_gives_the_local_executors_parts(tmp_path):
    with cluster.loopback_local_node():  # stop here rather than start a Ray off loopback
        assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
    assert not ray.is_initialized()
    config = parse_config(CONFIG)
    cache = tmp_path / "cache"
    on_ray = run_experiment(config, tmp_path / "ray", executor="ray", cache_dir=cache,
                            progress=False)  # starts and stops its own Ray
    assert not ray.is_initialized()
    assert sorted(on_ray.ran) == TINY_JOBS
    local = run_experiment(config, tmp_path / "local", cache_dir=cache, progress=False)
    assert local.ran == on_ray.ran  # the shared cache spares extraction, not the probes
    for kind in ("results", "summary"):  # the tasks wrote every part, byte for byte
        names = sorted(p.name for p in (tmp_path / "ray" / kind).glob("*.parquet"))
        assert names == sorted(p.name for p in (tmp_path / "local" / kind).glob("*.parquet"))
        assert len(names) == 2
        for name in names:
            assert ((tmp_path / "ray" / kind / name).read_bytes()
                    == (tmp_path / "local" / kind / name).read_bytes())
    assert local.results["test_acc"].between(0, 1).all() and len(local.results) == 2 * 2 * 3


def test_unreachable_cluster_address_is_one_line_and_writes_nothing(tmp_path, capsys):
    with socket.socket() as s:  # a loopback port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), "--executor", "ray", "--address",
                 f"127.0.0.1:{port}", "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("drprobe: error: cannot reach the Ray cluster at") and str(port) in err[0]
    assert not out.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:port", "ray://10.0.0.1:6379",
                                     ":6379", "10.0.0.1:0", "10.0.0.1:70000", "auto"])
def test_a_cluster_address_must_be_host_and_port(address):
    with pytest.raises(cluster.ClusterError, match="is not HOST:PORT") as err:
        cluster.parse_address(address)
    assert len(str(err.value).splitlines()) == 1 and repr(address) in str(err.value)


@pytest.mark.parametrize(("address", "parsed"), [("10.0.0.1:6379", ("10.0.0.1", 6379)),
                                                 ("head.example:1", ("head.example", 1)),
                                                 ("[::1]:6379", ("::1", 6379))])
def test_cluster_addresses_parse(address, parsed):
    assert cluster.parse_address(address) == parsed


def test_a_loopback_address_ray_would_rewrite_is_refused_before_dialling(monkeypatch):
    """Ray on a machine with a default route dials that route's address for 127.0.0.1."""
    monkeypatch.setattr(services, "get_node_ip_address", lambda address=None: "192.0.2.1")
    with socket.socket() as s:  # something answers on the given address
        s.bind(("127.0.0.1", 0))
        s.listen()
        address = f"127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(cluster.ClusterError, match="Ray would not dial") as err:
            cluster.join(ray, address)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and repr(address) in message
    assert set(re.findall(r"\d+\.\d+\.\d+\.\d+", message)) == {"127.0.0.1"}
    assert not ray.is_initialized()


def test_the_token_is_found_where_rays_own_client_finds_it(tmp_path, monkeypatch):
    """Every mix of RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token: drprobe names
    the place whose token Ray's own token loader returns (or none where Ray finds none)."""
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (tmp_path / "named").write_text("token-from-path\n")
    monkeypatch.setenv("HOME", str(home))
    values = {"RAY_AUTH_TOKEN": "token-from-env", "RAY_AUTH_TOKEN_PATH": "token-from-path",
              "~/.ray/auth_token": "token-from-home"}
    try:
        for env_token, path_token, home_token in itertools.product(
                (None, "", "token-from-env", "   "), (False, True), (False, True)):
            for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
                monkeypatch.delenv(name, raising=False)
            if env_token is not None:
                monkeypatch.setenv("RAY_AUTH_TOKEN", env_token)
            if path_token:
                monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "named"))
            (home / ".ray" / "auth_token").unlink(missing_ok=True)
            if home_token:
                (home / ".ray" / "auth_token").write_text("token-from-home")
            loader.reset_cache()
            found = loader.has_token(ignore_auth_mode=True)
            if env_token == "   ":  # Ray takes the blank variable and has no token
                assert not found
                with pytest.raises(cluster.ClusterError, match="RAY_AUTH_TOKEN is set but blank"):
                    cluster.token_source()
                continue
            source = cluster.token_source()
            case = (env_token, path_token, home_token, source)
            if not found:
                assert source is None, case
                continue
            assert source is not None, case
            assert values[source.split(" ")[0]] == loader.get_raw_token(ignore_auth_mode=True), case
    finally:
        monkeypatch.undo()
        loader.reset_cache()


def test_a_token_path_naming_no_file_is_one_line(tmp_path):
    missing = tmp_path / "no-such-token"
    with pytest.raises(cluster.ClusterError, match="RAY_AUTH_TOKEN_PATH") as err:
        cluster.token_source({"RAY_AUTH_TOKEN_PATH": str(missing)}, home=Path(tmp_path))
    assert str(missing) in str(err.value) and len(str(err.value).splitlines()) == 1
