"""Benchmark: the time of a truncation card once the embeddings are cached.

``drprobe card hf:all-MiniLM-L6-v2 fine-foods`` (384-d, 4,000 train + 1,000 test reviews; tasks
probe and kNN; first-k, random-k x 3 seeds, pca-k, ranked-k; 12 sizes; 500 bootstrap resamples)
and ``drprobe card hf:all-MiniLM-L6-v2 bbc-news`` (1,780 + 445 articles, 445 title queries
against 2,225 bodies; probe, kNN, retrieval). The first round fills the embedding cache (its
time is reported apart, with the embedding share); then ``--rounds`` rounds run the whole card
from the cache (load, embed = cache read, fit, tasks, bootstrap, search timing, pages). The
target of issue 21: under 2 minutes on 2 cores for the 5,000-text card, embedding excluded.

Prints a table, writes benchmarks/results/card.json.

    nice -n 10 python benchmarks/bench_card.py
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from drprobe.card.build import make_card
from drprobe.card.render import write_card

CARDS = (("hf:all-MiniLM-L6-v2", "fine-foods"), ("hf:all-MiniLM-L6-v2", "bbc-news"))
OUT = Path(__file__).resolve().parent / "results" / "card.json"


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True,
                               check=False).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def one_card(model: str, data: str, cache: str, out: Path) -> dict:
    t0 = time.perf_counter()
    card = make_card(model, data, cache_dir=cache, progress=False)
    write_card(card, out)
    return {"wall_s": time.perf_counter() - t0, "stages_s": card.seconds, "d": card.d,
            "items": card.n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", default=None,
                        help="embedding cache [default: a fresh temporary folder]")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        for model, data in CARDS:
            first = one_card(model, data, cache, Path(tmp) / "first")
            warm = [one_card(model, data, cache, Path(tmp) / f"r{i}") for i in range(args.rounds)]
            rows.append({
                "model": model, "data": data, "d": first["d"], "items": first["items"],
                "first_wall_s": first["wall_s"], "first_embed_s": first["stages_s"]["embed"],
                "cached_wall_s": statistics.median(r["wall_s"] for r in warm),
                "cached_stages_s": warm[len(warm) // 2]["stages_s"],
            })
    report = {"cpu": cpu_model(), "rounds": args.rounds, "cards": rows}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"CPU: {report['cpu']}")
    for r in rows:
        print(f"{r['data']:>11} d={r['d']} items={r['items']}: first {r['first_wall_s']:.1f} s "
              f"(embedding {r['first_embed_s']:.1f} s), cached median {r['cached_wall_s']:.1f} s; "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["cached_stages_s"].items()))


if __name__ == "__main__":
    main()
