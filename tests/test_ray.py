"""The Ray executor on a local, loopback-only Ray started by the test: the same jobs as Ray
tasks give the same tables as the local executor."""

from __future__ import annotations

import socket

import pandas as pd
import pytest
import yaml

from drprobe.cli import main
from drprobe.experiment.config import parse_config
from drprobe.experiment.runner import run_experiment
from drprobe.experiment.store import read_results
from drprobe.report.publish import publish_run

ray = pytest.importorskip("ray")

CONFIG = {
    "name": "ray",
    "models": [{"spec": "builtin:mobilenet_v2", "weights": ["pretrained", "random"]}],
    "layers": ["features.14"],
    "datasets": [{"name": "digits", "n_train": 300, "n_test": 150, "image_size": 32}],
    "fractions": [0.1, 0.5],
    "seeds": [1, 2],
    "resources": {"cpus": 1, "gpus": 0},
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_and_local_executors_give_the_same_tables(tmp_path, local_ray):
    config = parse_config(CONFIG)
    cache = tmp_path / "cache"
    on_ray = run_experiment(config, tmp_path / "ray", executor="ray", cache_dir=cache,
                            progress=False)
    publish_run(on_ray.results, on_ray.summary, tmp_path / "ray", plot=False)
    assert sorted(on_ray.ran) == ["mobilenet_v2-pretrained-digits-features.14",
                                  "mobilenet_v2-random-digits-features.14"]
    for kind in ("results", "summary", "timings"):  # the tasks wrote every part
        assert len(list((tmp_path / "ray" / kind).glob("*.parquet"))) == 2
    local = run_experiment(config, tmp_path / "local", cache_dir=cache, progress=False)
    publish_run(local.results, local.summary, tmp_path / "local", plot=False)
    assert local.ran == on_ray.ran  # the shared cache spares extraction, not the probes

    a, b = read_results(tmp_path / "ray" / "results"), read_results(tmp_path / "local" / "results")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ray" / "summary.csv"),
                                  pd.read_csv(tmp_path / "local" / "summary.csv"))
    assert a["test_acc"].between(0, 1).all() and len(a) == 2 * 2 * 3


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
