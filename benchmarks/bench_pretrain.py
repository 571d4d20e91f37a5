"""Benchmark: what a pretraining grid costs, from one measured epoch per variant.

For every variant of a ``drprobe pretrain`` config, trains one epoch (seed 0) on a fraction of
its training subset, times it, and extrapolates the whole grid: per run
``seconds/image * n_train * epochs`` (the source-test evaluation, a few per cent, is left
out), times the seeds, divided by ``--jobs`` (runs trained at
once, one process each, one core each). Both wall and CPU seconds are measured: with one
thread, CPU seconds are what a quiet core would take, so the CPU-based estimate holds on a busy
machine too (the wall-based one then shows the slowdown). Prints a table and writes
benchmarks/results/pretrain.json (with the machine's load average).

    python benchmarks/bench_pretrain.py configs/study/pretrain.yaml --jobs 2
    python benchmarks/bench_pretrain.py configs/study/pretrain-tiny.yaml --fraction 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from drprobe.devices import resolve_device
from drprobe.pretrain import load_pretrain_config
from drprobe.pretrain.data import load_source
from drprobe.pretrain.train import train_one

OUT = Path(__file__).resolve().parent / "results" / "pretrain.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--fraction", type=float, default=0.25,
                        help="share of each variant's n_train timed for one epoch")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_pretrain_config(args.config)
    device = resolve_device(cfg.device, mps=False)
    rows, totals = [], {"cpu": 0.0, "wall": 0.0}
    loaded: dict[tuple, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in cfg.variants:
            recipe = cfg.resolved(variant.name)
            splits = loaded.setdefault((recipe.data.dataset, recipe.data.data_root), {})
            n_full = load_source(recipe.data, device, splits).train_x.shape[0]
            n = max(recipe.batch_size, int(n_full * args.fraction))
            # the source-test evaluation (a few % of a run) is left out of the timing
            part = recipe.model_copy(update={"epochs": 1, "data": recipe.data.model_copy(
                update={"n_train": n, "n_test": 10})})
            small = load_source(part.data, device, splits)
            prov, _ = train_one(part, 0, Path(tmp) / variant.name, small, device, False)
            seeds = len(cfg.seeds_of(variant.name))
            scale = n_full * recipe.epochs * seeds / n
            row = {"variant": variant.name, "timed_images": n, "n_train": n_full,
                   "epochs": recipe.epochs, "test_acc_after_timed_epoch": prov["test_acc"]}
            for kind in ("wall", "cpu"):
                seconds = prov[f"{kind}_seconds"]
                totals[kind] += seconds * scale
                row[f"{kind}_ms_per_image"] = round(1000 * seconds / n, 3)
                row[f"{kind}_all_seeds_seconds"] = round(seconds * scale, 1)
            rows.append(row)
            print(f"{variant.name:>12}: {row['cpu_ms_per_image']:7.3f} ms/image CPU "
                  f"({row['wall_ms_per_image']:7.3f} wall) -> {row['cpu_all_seeds_seconds']:7.1f}"
                  f" CPU s for {seeds} seeds", flush=True)
    for kind in ("cpu", "wall"):
        print(f"grid from {kind} time: {totals[kind] / 60:.1f} process-minutes; with --jobs "
              f"{args.jobs}: about {totals[kind] / 60 / args.jobs:.1f} minutes")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "config": args.config, "fraction": args.fraction, "jobs": args.jobs,
        "threads": args.threads, "device": str(device), "rows": rows,
        "grid_cpu_process_minutes": round(totals["cpu"] / 60, 1),
        "grid_minutes_from_cpu": round(totals["cpu"] / 60 / args.jobs, 1),
        "grid_minutes_from_wall": round(totals["wall"] / 60 / args.jobs, 1),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
