"""Benchmark: feature extraction at scale -- bounded memory and throughput against the bare forward.

(a) Memory. ``get_features`` of a flattened MobileNetV2 middle block at 224 px
    (``features.4``: 32 x 28 x 28 = 25,088 neurons) for n = 10,000 images, float32 and float16
    storage, each in a fresh subprocess that records its peak RSS (``VmHWM``) and, sampled every
    50 ms, the peaks of anonymous memory (``RssAnon``: what the process allocated) and of mapped
    file pages (``RssFile``: shared libraries plus the pages of the cache memmap being written,
    which the kernel may reclaim). Throughput is measured on ``--probe-n`` images first; when the
    full run would take longer than ``--budget-s`` seconds, the two subprocesses run at
    ``4 * probe-n`` images and the peaks at n are extrapolated linearly from the two sizes (the
    JSON says which: ``"mode": "measured"`` or ``"extrapolated"``). One more subprocess extracts
    a ~1.2M-wide layer (``features.2.conv.0`` flattened, 96 x 112 x 112) as float16.
(b) Throughput, side by side in one process, same model, same batch size: images/s of
    ``iter_features`` streaming uint8 images into a ``FeatureCache`` entry (preprocessing,
    forward, copy out, memmap write, sha256 of the entry all included) against the bare forward
    pass on already preprocessed tensors -- the full ``module(x)`` for the penultimate layer, and
    the forward truncated at the block for ``features.4``. Rounds alternate (bare, extraction,
    extraction, extraction, bare, ...); the ratio is of the median rounds (on a shared machine
    noise hits both sides, so a best-of-k picks whichever side had one lucky round); the ratio
    of the best rounds and of process CPU time (``time.process_time``, best round, all threads)
    are reported beside it.
    ``--threads 1`` keeps OpenMP barriers from stalling when other processes hold the cores.

Inputs are seeded synthetic 32 x 32 RGB images (CIFAR-sized; content does not change timings)
resized to 224 px by the extractor. Prints a table, writes benchmarks/results/extract.json.

    nice -n 10 python benchmarks/bench_extract.py            # n = 10,000
    nice -n 10 python benchmarks/bench_extract.py --quick    # n = 512, smaller (b)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPEC = "builtin:mobilenet_v2"
BLOCK = "features.4"  # 32 x 28 x 28 = 25,088 at 224 px
WIDE = "features.2.conv.0"  # 96 x 112 x 112 = 1,204,224 at 224 px
SIZE = 224
MIB = 2**20


# ------------------------------------------------------------------------------ memory probe


def _status() -> dict[str, int]:
    """VmHWM, RssAnon, RssFile of this process in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    """Samples RssAnon / RssFile every ``period`` seconds and keeps their peaks."""

    def __init__(self, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.period, self.stop, self.peak = period, threading.Event(), {"RssAnon": 0,
                                                                         "RssFile": 0}

    def run(self) -> None:
        while not self.stop.is_set():
            for key, value in _status().items():
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], value)
            time.sleep(self.period)


def child(config: dict[str, Any]) -> dict[str, Any]:
    """One ``get_features`` call in this (fresh) process; returns timings and memory peaks."""
    from drprobe.features import get_features, plan_batches
    from drprobe.sources.models import load_model

    bundle = load_model(SPEC)
    plan = plan_batches(bundle, config["layer"], pooling="flatten", image_size=SIZE,
                        max_batch_mb=config["max_batch_mb"])
    before = _status()
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    feats = get_features(bundle, config["layer"], f"npz:{config['npz']}", "train",
                         n=config["n"], pooling="flatten", image_size=SIZE,
                         dtype=config["dtype"], max_batch_mb=config["max_batch_mb"],
                         cache_dir=config["cache"], progress=False)
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    after = _status()
    n, d = feats.X.shape
    return {
        "layer": config["layer"], "dtype": config["dtype"], "n": int(n), "d": int(d),
        "batch_size": plan.batch_size, "item_bytes": plan.item_bytes, "seconds": seconds,
        "images_per_s": n / seconds, "features_mib": feats.X.nbytes / MIB,
        "vmhwm_before_mib": before["VmHWM"] / MIB, "vmhwm_mib": after["VmHWM"] / MIB,
        "rss_anon_peak_mib": sampler.peak["RssAnon"] / MIB,
        "rss_file_peak_mib": sampler.peak["RssFile"] / MIB,
    }


def run_child(**config: Any) -> dict[str, Any]:
    """Run :func:`child` in a subprocess (inherits this process's niceness)."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed: {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {result['layer']} {result['dtype']} n={result['n']}: {result['seconds']:.1f} s, "
          f"VmHWM {result['vmhwm_mib']:.0f} MiB", flush=True)
    return result


def extrapolate(small: dict, big: dict, n: int, bytes_per_value: int) -> dict[str, float]:
    """Peaks at ``n`` images from runs at two smaller sizes.

    Anonymous memory does not grow with n (the larger of the two runs' peaks is kept); the
    memmap's file pages grow by exactly d * bytes per image, and VmHWM with them; time is linear.
    """
    grow = (n - big["n"]) * big["d"] * bytes_per_value / MIB
    per_image_s = (big["seconds"] - small["seconds"]) / (big["n"] - small["n"])
    return {
        "vmhwm_mib": big["vmhwm_mib"] + grow,
        "rss_anon_peak_mib": max(small["rss_anon_peak_mib"], big["rss_anon_peak_mib"]),
        "rss_anon_growth_mib": big["rss_anon_peak_mib"] - small["rss_anon_peak_mib"],
        "rss_file_peak_mib": big["rss_file_peak_mib"] + grow,
        "seconds": big["seconds"] + per_image_s * (n - big["n"]),
        "features_mib": n * big["d"] * bytes_per_value / MIB,
    }


# -------------------------------------------------------------------------------- throughput


def side_by_side(images: np.ndarray, batch: int, rounds: int, root: Path) -> list[dict]:
    """(b): extraction into the cache vs the bare forward pass, alternating rounds."""
    from drprobe.features.cache import FeatureCache
    from drprobe.features.extract import iter_features, plan_batches
    from drprobe.sources.layers import PENULTIMATE, layer_features
    from drprobe.sources.models import load_model
    from drprobe.sources.transforms import preprocess

    bundle = load_model(SPEC)
    n = len(images)
    labels = np.arange(n) % 10
    prepared = [preprocess(images[i:i + batch], SIZE, bundle.mean, bundle.std)
                for i in range(0, n, batch)]
    rows = []
    for layer, pooling, bare_name in ((PENULTIMATE, "avg", "module(x)"),
                                      (BLOCK, "flatten", f"forward to {BLOCK}")):
        def bare(layer: str = layer, pooling: str = pooling) -> None:
            with torch.inference_mode():
                for x in prepared:
                    if layer == PENULTIMATE:
                        bundle.module(x)
                    else:
                        layer_features(bundle, layer, x, pooling)

        def extract(r: int, layer: str = layer, pooling: str = pooling) -> None:
            cache = FeatureCache(root / f"tp-{layer}-{r}")
            batches = iter_features(bundle, layer, images, pooling=pooling, image_size=SIZE,
                                    batch_size=batch, max_batch_mb=None, progress=False)
            cache.put({"round": r, "layer": layer}, n, batches, labels, dtype="float32")

        layer_features(bundle, layer, prepared[0][:2], pooling)  # warm-up; the plan's one
        plan_batches(bundle, layer, pooling=pooling, image_size=SIZE)  # dummy pass per process
        wall: dict[str, list[float]] = {"bare": [], "extract": []}
        cpu: dict[str, list[float]] = {"bare": [], "extract": []}
        for r in range(rounds):
            order = (("bare", bare), ("extract", lambda r=r: extract(r)))
            for name, fn in order if r % 2 == 0 else order[::-1]:
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        rate = {k: n / min(v) for k, v in wall.items()}
        rate_med = {k: n / statistics.median(v) for k, v in wall.items()}
        rate_cpu = {k: n / min(v) for k, v in cpu.items()}
        rows.append({"layer": layer, "pooling": pooling, "bare": bare_name, "n": n,
                     "batch_size": batch, "rounds": rounds,
                     "bare_images_per_s": rate_med["bare"],
                     "extract_images_per_s": rate_med["extract"],
                     "ratio": rate_med["extract"] / rate_med["bare"],
                     "ratio_best": rate["extract"] / rate["bare"],
                     "bare_images_per_cpu_s": rate_cpu["bare"],
                     "extract_images_per_cpu_s": rate_cpu["extract"],
                     "ratio_cpu": rate_cpu["extract"] / rate_cpu["bare"],
                     "bare_s": wall["bare"], "extract_s": wall["extract"],
                     "bare_cpu_s": cpu["bare"], "extract_cpu_s": cpu["extract"]})
        print(f"  {layer}: bare {rate_med['bare']:.1f} img/s, extraction "
              f"{rate_med['extract']:.1f} img/s (medians); ratio {rows[-1]['ratio']:.1%}, "
              f"best-of-{rounds} {rows[-1]['ratio_best']:.1%}, "
              f"best CPU time {rate_cpu['extract'] / rate_cpu['bare']:.1%}", flush=True)
    return rows


# ----------------------------------------------------------------------------------- driver


def memory_part(n: int, probe_n: int, quick: bool, args: argparse.Namespace, root: Path,
                images: np.ndarray) -> dict[str, Any]:
    """(a) and (a'): get_features in subprocesses, peaks of memory."""
    npz = root / "images.npz"
    np.savez(npz, x_train=images, y_train=np.arange(n) % 10, x_test=images[:10],
             y_test=np.arange(10))

    def run(layer: str, dtype: str, count: int) -> dict:
        return run_child(layer=layer, dtype=dtype, n=count, npz=str(npz),
                         max_batch_mb=args.max_batch_mb,
                         cache=str(root / f"cache-{layer}-{dtype}-{count}"))

    print(f"(a) {BLOCK} flattened at {SIZE} px, probe on {probe_n} images", flush=True)
    probe = {"float32": run(BLOCK, "float32", probe_n)}
    predicted = n / probe["float32"]["images_per_s"]
    mode = "measured" if predicted <= args.budget_s else "extrapolated"
    print(f"  full run predicted {predicted:.0f} s -> {mode}", flush=True)
    memory: dict[str, Any] = {"mode": mode, "n": n, "predicted_full_s": predicted,
                              "probe": probe, "runs": {}}
    for dtype in ("float32", "float16"):
        if mode == "measured":
            memory["runs"][dtype] = {"measured": run(BLOCK, dtype, n)}
            continue
        small = probe.get(dtype) or run(BLOCK, dtype, probe_n)
        memory["runs"][dtype] = {"small": small, "big": run(BLOCK, dtype, 4 * probe_n)}
    wide_n = 32 if quick else 128
    print(f"(a') {WIDE} flattened at {SIZE} px, {wide_n} images, float16", flush=True)
    memory["wide"] = run(WIDE, "float16", wide_n)
    return memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="n=512, smaller throughput run")
    parser.add_argument("--part", choices=("all", "memory", "throughput"), default="all",
                        help="run one part; the other is kept from an existing --out file")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--probe-n", type=int, default=256)
    parser.add_argument("--budget-s", type=float, default=600.0,
                        help="run the full n only if one run is predicted to fit this")
    parser.add_argument("--max-batch-mb", type=float, default=512.0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for (b) (default: torch's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "extract.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    n, probe_n = (512, 64) if args.quick else (args.n, args.probe_n)
    tp_n, tp_batch, rounds = (16, 8, 3) if args.quick else (96, 16, 10)
    out = Path(args.out)
    report = json.loads(out.read_text()) if args.part != "all" and out.is_file() else {}
    machine = {"cpus": os.cpu_count(), "torch": torch.__version__,
               "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
               "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        images = np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        if args.part in ("all", "memory"):
            report["memory"] = memory_part(n, probe_n, args.quick, args, Path(tmp), images)
        if args.part in ("all", "throughput"):
            print(f"(b) throughput, {tp_n} images, batch {tp_batch}, {rounds} rounds",
                  flush=True)
            report["throughput"] = side_by_side(images[:tp_n], tp_batch, rounds, Path(tmp))
    if "memory" not in report or "throughput" not in report:
        raise SystemExit(f"{out} lacks the other part; run with --part all")
    _extrapolate_all(report["memory"])
    machine["loadavg_after"] = os.getloadavg()
    report.update({"model": SPEC, "image_size": SIZE, "input_side": 32,
                   "targets": {"vmhwm_mib_max": 3 * 1024, "throughput_ratio_min": 0.9}})
    report.pop("machine", None)
    report.setdefault("machine_runs", {})[args.part] = machine
    print_table(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def _extrapolate_all(memory: dict) -> None:
    for dtype, run in memory["runs"].items():
        if "big" in run:
            run["at_n"] = extrapolate(run["small"], run["big"], memory["n"],
                                      np.dtype(dtype).itemsize)


def print_table(report: dict) -> None:
    mem = report["memory"]
    print(f"\nmemory, {BLOCK} flatten @ {SIZE} px, n = {mem['n']} ({mem['mode']})")
    print(f"{'dtype':8} {'d':>7} {'batch':>5} {'VmHWM MiB':>10} {'anon MiB':>9} {'file MiB':>9} "
          f"{'features MiB':>12} {'s':>7}")
    for dtype, run in mem["runs"].items():
        r = run.get("measured") or {**run["big"], **run["at_n"]}
        print(f"{dtype:8} {r['d']:>7} {r['batch_size']:>5} {r['vmhwm_mib']:>10.0f} "
              f"{r['rss_anon_peak_mib']:>9.0f} {r['rss_file_peak_mib']:>9.0f} "
              f"{r['features_mib']:>12.0f} {r['seconds']:>7.0f}")
    w = mem["wide"]
    print(f"wide: {WIDE} d={w['d']} n={w['n']} float16 batch {w['batch_size']}: VmHWM "
          f"{w['vmhwm_mib']:.0f} MiB, anon {w['rss_anon_peak_mib']:.0f} MiB, features "
          f"{w['features_mib']:.0f} MiB")
    print(f"\nthroughput (images/s), batch {report['throughput'][0]['batch_size']}")
    for row in report["throughput"]:
        print(f"{row['layer']:12} bare ({row['bare']}) {row['bare_images_per_s']:7.1f}   "
              f"extraction {row['extract_images_per_s']:7.1f}   ratio {row['ratio']:.1%} "
              f"(best rounds {row['ratio_best']:.1%}, CPU time {row['ratio_cpu']:.1%})")


if __name__ == "__main__":
    main()
