"""Benchmark: wide flattened layers (d far above n) in bounded memory, time linear in d.

MobileNetV2 with its packaged ImageNet weights at 224 px on real Fashion-MNIST, flattened
middle blocks ``features.1`` (16 x 112 x 112 = 200,704 neurons), ``features.3`` (24 x 56 x 56 =
75,264) and ``features.4`` (32 x 28 x 28 = 25,088), 5,000 train / 1,000 test images, analysed by
``analyze_layer``: the random selector over the paper's 15 fractions x 3 seeds plus ``pca_top``
and ``pca_least``, linear and debiased CKA and DR. A fourth run takes ``features.4`` with 30,000
training images, the random selector over the 15 fractions with one seed (n and d both large:
the memory plan decides the path).

Features are extracted first (cached, float16 storage). Each analysis then runs in a fresh
subprocess that records its wall time, the time of each phase, its peak RSS (``VmHWM``) and,
sampled every 50 ms, the peaks of anonymous memory (``RssAnon``) and of mapped file pages
(``RssFile``: the memmaps' pages, which the kernel may reclaim), and the machine's load average
before and after. Writes benchmarks/results/wide.json and prints a table.

    nice -n 5 python benchmarks/bench_wide.py                  # all four runs
    nice -n 5 python benchmarks/bench_wide.py --scale 10       # a tenth of the images
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_extract import Sampler, _status

from drprobe.wide import default_budget_bytes

SPEC = "builtin:mobilenet_v2"
SIZE = 224
MIB, GIB = 2**20, 2**30
RUNS = {
    "features.1": {"layer": "features.1", "n_train": 5000, "seeds": [1, 2, 3],
                   "selectors": ["random", "pca_top", "pca_least"]},
    "features.3": {"layer": "features.3", "n_train": 5000, "seeds": [1, 2, 3],
                   "selectors": ["random", "pca_top", "pca_least"]},
    "features.4": {"layer": "features.4", "n_train": 5000, "seeds": [1, 2, 3],
                   "selectors": ["random", "pca_top", "pca_least"]},
    "features.4-30k": {"layer": "features.4", "n_train": 30_000, "seeds": [1],
                       "selectors": ["random"]},
}
N_TEST = 1000


def features(layer: str, split: str, n: int, cache: str, progress: bool = False):
    """Cached flattened features of one split (extracted on first use).

    The network runs in channels-last memory format (same values, the same cache entry; its
    depthwise convolutions are about twice as fast on a CPU).
    """
    import torch

    from drprobe.features import get_features
    from drprobe.sources.models import load_model

    bundle = load_model(SPEC)
    bundle.module.to(memory_format=torch.channels_last)
    return get_features(bundle, layer, "fashion-mnist", split, pooling="flatten",
                        image_size=SIZE, n=n, dtype="float16", cache_dir=cache,
                        progress=progress)


def child(config: dict[str, Any]) -> dict[str, Any]:
    """One layer's analysis in this (fresh) process; timings and memory peaks."""
    from drprobe.analysis.layer import analyze_layer
    from drprobe.probes import ProbeBank

    load_before = os.getloadavg()
    tr = features(config["layer"], "train", config["n_train"], config["cache"])
    te = features(config["layer"], "test", config["n_test"], config["cache"])
    before = _status()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    bank = ProbeBank(keep_predictions=True, progress=False, n_threads=config["threads"])
    res = analyze_layer(tr.X, tr.y, te.X, te.y, selectors=config["selectors"],
                        seeds=config["seeds"], bank=bank, progress=config["progress"], n_boot=100,
                        memory_budget_gb=config["budget_gb"], scratch_dir=config["scratch"])
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    after = _status()
    d = int(tr.X.shape[1])
    summary = res.summary[res.summary["delta"] == 0.9]
    return {
        **{k: config[k] for k in ("name", "layer", "n_train", "n_test", "seeds", "selectors")},
        "d": d, "seconds": seconds, "seconds_per_neuron": seconds / d,
        "phases": res.timings, "plan": res.plan.describe(),
        "n_probes": len(res.results),
        "full_acc": float(summary["full_acc"].iloc[0]),
        "dr_0.9": {r.selector: float(r.dr) for r in summary.itertuples()},
        "vmhwm_before_mib": before["VmHWM"] / MIB, "vmhwm_mib": after["VmHWM"] / MIB,
        "rss_anon_peak_mib": sampler.peak["RssAnon"] / MIB,
        "rss_file_peak_mib": sampler.peak["RssFile"] / MIB,
        "load_before": load_before, "load_after": os.getloadavg(),
    }


def run_child(config: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`child` in a subprocess (inherits this process's niceness); its BLAS and
    OpenMP pools get ``threads`` threads (on a shared machine, 1 avoids threads waiting on each
    other)."""
    n = str(config["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)],
                          stdout=subprocess.PIPE,
                          stderr=None if config["progress"] else subprocess.PIPE,
                          text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError("child failed: " + ("see its progress output above" if proc.stderr
                                               is None else proc.stderr.strip()[-500:]))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {result['name']}: d={result['d']}, {result['seconds']:.0f} s, "
          f"{result['seconds_per_neuron'] * 1e3:.2f} ms/neuron, VmHWM "
          f"{result['vmhwm_mib']:.0f} MiB (anon {result['rss_anon_peak_mib']:.0f} MiB); "
          f"{result['plan']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--scale", type=int, default=1,
                        help="divide every run's training and test images by this (a smaller "
                             "run on a busy machine)")
    parser.add_argument("--budget-gb", type=float, default=None,
                        help="memory budget of the plan [default: a third of the machine]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the bank")
    parser.add_argument("--cache", default=os.environ.get("DRPROBE_CACHE",
                                                          str(Path.home() / ".cache/drprobe")))
    parser.add_argument("--scratch", default=None,
                        help="folder of the neuron-major scratch copies [default: temp]")
    parser.add_argument("--progress", action="store_true",
                        help="show the analyses' progress bars (on standard error)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "wide.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    scale = args.scale
    budget = args.budget_gb or default_budget_bytes() / GIB
    configs = [{"name": name, **RUNS[name], "n_train": RUNS[name]["n_train"] // scale,
                "n_test": N_TEST // scale, "cache": args.cache, "budget_gb": budget,
                "threads": args.threads, "scratch": args.scratch, "progress": args.progress}
               for name in args.runs]
    t0 = time.perf_counter()
    for c in configs:  # extraction first, outside the measured runs
        for split, n in (("train", c["n_train"]), ("test", c["n_test"])):
            print(f"extract {c['layer']} {split} n={n}", flush=True)
            features(c["layer"], split, n, c["cache"], progress=True)
    extract_s = time.perf_counter() - t0
    print(f"extraction {extract_s:.0f} s; analyses:", flush=True)
    results = [run_child(c) for c in configs]
    narrow = min(results, key=lambda r: r["d"] if r["n_train"] == 5000 // scale else 1e18)
    wide = max(results, key=lambda r: r["d"] if r["n_train"] == 5000 // scale else -1)
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "extract_seconds": extract_s, "runs": results,
        "time_per_neuron_ratio_widest_to_narrowest":
            wide["seconds_per_neuron"] / narrow["seconds_per_neuron"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"time per neuron, widest / narrowest: "
          f"{out['time_per_neuron_ratio_widest_to_narrowest']:.2f}; wrote {args.out}")


if __name__ == "__main__":
    main()
