"""The card's pages: ``card.json`` (the ecosystem's words), ``card.md`` and a self-contained
``card.html`` (figures embedded, checked in a browser like the report), plus ``curves.csv``.

The JSON speaks the deployment tools' language: ``sentence_transformers.truncate_dim`` (the
first-k size that keeps 99% on every task), ``hf_config.is_matryoshka`` /
``hf_config.matryoshka_dimensions`` (what vLLM reads from a model's config to serve shortened
vectors: the sizes at which first-k kept 95% on every task) and ``mteb``: one MTEB result object
per task that maps onto an MTEB task type and per first-k size (``scores.test[0]`` with
``main_score``, ``hf_subset``, ``languages``), so a card can sit beside MTEB results.

Memory: the card's tables (a few hundred rows) and one figure at a time.
"""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from drprobe.card.build import Card
from drprobe.card.summary import SAFE_KEEP, SERVE_KEEP, verdict
from drprobe.files import atomic_path, atomic_write_text
from drprobe.report.html import FigureEntry, render_page
from drprobe.report.run_tables import markdown_table

__all__ = ["CARD_FILES", "card_json", "card_markdown", "write_card"]

CARD_FILES = ("card.json", "card.md", "card.html", "curves.csv")
#: task -> MTEB task type and the metric names MTEB uses for ours
MTEB_TYPES = {
    "retrieval": ("Retrieval", {"ndcg@10": "ndcg_at_10", "recall@10": "recall_at_10",
                                "mrr@10": "mrr_at_10"}),
    "knn": ("Classification", {"accuracy": "accuracy"}),
    "probe": ("Classification", {"accuracy": "accuracy"}),
    "sts": ("STS", {"spearman": "cosine_spearman"}),
}
COLORS = {"first-k": "#1f77b4", "random-k": "#ff7f0e", "pca-k": "#2ca02c", "ranked-k": "#9467bd"}


def _num(v):
    """JSON-safe number: NaN -> None, inf -> None, numpy scalars -> Python."""
    if v is None:
        return None
    v = float(v)
    return None if not math.isfinite(v) else (int(v) if v.is_integer() else v)


def _first_k_ok(card: Card, keep: float) -> list[int]:
    """Sizes at which first-k keeps ``keep`` of full quality on every task."""
    ok = None
    for s in card.tasks.values():
        c = s.curve[s.curve["strategy"] == "first-k"]
        good = {int(r.k) for r in c.itertuples() if r.quality >= keep * s.full["quality"] - 1e-12}
        ok = good if ok is None else ok & good
    return sorted(ok or set())


def _is_matryoshka(card: Card) -> bool | None:
    """First-k needs fewer dimensions than the upper bound of random-k's interval, at 95%, on
    every task: the leading coordinates carry more than a random subset (None: not measured)."""
    if not {"first-k", "random-k"} <= set(card.strategies):
        return None
    for s in card.tasks.values():
        c = s.critical[np.isclose(s.critical["keep"], SERVE_KEEP)].set_index("strategy")
        if not c.loc["first-k", "k_star"] < c.loc["random-k", "k_low"]:
            return False
    return True


def _mteb(card: Card) -> list[dict]:
    out = []
    for task, s in card.tasks.items():
        kind, names = MTEB_TYPES[task]
        for row in s.curve[s.curve["strategy"] == "first-k"].to_dict("records"):
            row[s.metric] = row["quality"]
            scores = {theirs: _num(row[ours]) for ours, theirs in names.items() if ours in row}
            out.append({
                "task_name": f"drprobe-{card.data.name}-{task}", "task_type": kind,
                "dataset_revision": card.data.fingerprint, "mteb_version": None,
                "model_name": card.model_name, "truncate_dim": int(row["k"]),
                "scores": {"test": [{
                    "hf_subset": "default",
                    "languages": ["eng-Latn"] if card.data.modality == "text" else [],
                    "main_score": _num(row["quality"]), **scores}]},
                "evaluation_time": _num(card.seconds.get(task)),
            })
    return out


def card_json(card: Card) -> dict:
    """The card as a JSON-ready dict."""
    tasks = {}
    for task, s in card.tasks.items():
        curves = {st: [{"dim": int(r.k), "quality": _num(r.quality), "low": _num(r.low),
                        "high": _num(r.high), "seed_sd": _num(r.seed_sd)}
                       for r in g.itertuples()] for st, g in s.curve.groupby("strategy", sort=False)}
        smallest = {st: {f"{r.keep:.2f}": {
            "dim": _num(r.k_star), "low": _num(r.k_low), "high": _num(r.k_high),
            "quality": _num(r.quality), "worst_group": r.worst_group,
            "worst_group_quality": _num(r.worst_quality),
            "worst_group_full_quality": _num(r.worst_full)} for r in g.itertuples()}
            for st, g in s.critical.groupby("strategy", sort=False)}
        tasks[task] = {"metric": s.metric, "full": {k: _num(v) for k, v in s.full.items()},
                       "curves": curves, "smallest_dim": smallest,
                       "verdicts": [verdict(s, keep, card.d) for keep in card.keeps]}
    best, smallest = card.best(SAFE_KEEP)
    truncate = card.smallest("first-k", SAFE_KEEP) if "first-k" in card.strategies else math.inf
    truncate = truncate if truncate < card.d else math.inf  # no first-k cut keeps it: null
    return {
        "drprobe_card": 1, "drprobe_version": card.version,
        "model": {"spec": card.model, "name": card.model_name, "dimension": card.d,
                  "embedding": {k: v for k, v in card.embed_meta.items()
                                if isinstance(v, (str, int, float, bool, type(None)))}},
        "data": {"name": card.data.name, "spec": card.data.spec,
                 "fingerprint": card.data.fingerprint, "about": card.data.about,
                 "items": card.n},
        "settings": {"strategies": card.strategies, "sizes": card.sizes, "seeds": card.seeds,
                     "keeps": card.keeps, "bootstrap_resamples": card.n_boot, "ci": card.ci,
                     "cosine_order": "cut, then re-normalise"},
        "tasks": tasks,
        "search": card.search.to_dict(orient="records"),
        "recommendation": {"keep": SAFE_KEEP, "strategy": best if smallest < card.d else None,
                           "dim": _num(smallest) if smallest < card.d else None},
        "sentence_transformers": {"truncate_dim": _num(truncate), "keep": SAFE_KEEP},
        "hf_config": {"is_matryoshka": _is_matryoshka(card),
                      "matryoshka_dimensions": _first_k_ok(card, SERVE_KEEP)},
        "mteb": _mteb(card),
        "seconds": {k: _num(v) for k, v in card.seconds.items()},
    }


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _figure(card: Card, task: str) -> FigureEntry:
    s = card.tasks[task]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for st, g in s.curve.groupby("strategy", sort=False):
        color = COLORS.get(st)
        ax.plot(g["k"], g["quality"], marker="o", ms=3, label=st, color=color)
        ax.fill_between(g["k"], g["low"], g["high"], alpha=0.2, color=color, linewidth=0)
    full = s.full["quality"]
    ax.axhspan(s.full["low"], s.full["high"], color="grey", alpha=0.15, linewidth=0)
    for keep, style in zip(card.keeps, ("-", "--", ":")):
        ax.axhline(keep * full, color="grey", linestyle=style, linewidth=0.8,
                   label=f"{keep:.0%} of full")
    ax.set_xscale("log", base=2)
    ticks = [k for k in card.sizes if k & (k - 1) == 0 or k == card.d]  # powers of two, d
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    ax.set_xlabel("kept dimensions (log scale)")
    ax.set_ylabel(s.metric)
    ax.set_title(f"{card.model_name} on {card.data.name}: {task}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return FigureEntry(f"{task}-curve", f"{task}: {s.metric} against kept dimensions",
                       f"Bands: {card.ci:.0%} bootstrap intervals over test items; grey band: the "
                       "full vectors' interval; lines: shares of full quality.", _png(fig),
                       [f"{task}-curve.png"])


def _critical_table(card: Card) -> pd.DataFrame:
    rows = []
    for task, s in card.tasks.items():
        for r in s.critical.itertuples():
            rows.append({"task": task, "keep": f"{r.keep:.0%}", "strategy": r.strategy,
                         "smallest dim": _fmt_k(r.k_star, card.d),
                         "interval": f"{_fmt_k(r.k_low, card.d)}–{_fmt_k(r.k_high, card.d)}",
                         "quality": r.quality, "worst group": r.worst_group or "—",
                         "worst group quality": r.worst_quality,
                         "same group, full": r.worst_full})
    return pd.DataFrame(rows)


def _fmt_k(k, d: int) -> str:
    return "not reached" if not np.isfinite(k) else str(int(k))


def _search_table(card: Card) -> pd.DataFrame:
    if card.search.empty:
        return card.search
    t = card.search.copy()
    t["ms per query"] = 1000 * t.pop("seconds_per_query")
    return t[["task", "k", "bytes_per_vector", "n_corpus", "backend", "ms per query",
              "speedup"]]


def card_markdown(card: Card, data: dict) -> str:
    """The card as Markdown."""
    lines = [f"# Truncation card: {card.model_name} on {card.data.name}", "",
             f"{card.d}-dimensional vectors; data: {card.data.about}", "",
             "## Verdicts", ""]
    for task in card.tasks:
        lines += [f"- {v}" for v in data["tasks"][task]["verdicts"]]
    rec = data["recommendation"]
    where = (f"**{rec['dim']}** ({rec['strategy']})" if rec["dim"] is not None
             else f"none below {card.d}")
    serve = data["hf_config"]
    lines += ["", (f"Smallest size keeping {rec['keep']:.0%} on every task: {where}. "
              "sentence-transformers `truncate_dim`: "
              f"{json.dumps(data['sentence_transformers']['truncate_dim'])}; vLLM / HF config: "
              f"`is_matryoshka: {json.dumps(serve['is_matryoshka'])}`, "
              f"`matryoshka_dimensions: {serve['matryoshka_dimensions']}`."), "",
              "Cosine tasks cut the vectors first, then re-normalise them.", "",
              "## Smallest dimension per strategy", "",
              markdown_table(_critical_table(card), 3), ""]
    search = _search_table(card)
    if not search.empty:
        lines += ["## Storage and search time", "",
                  markdown_table(search, 3), ""]
    for task, s in card.tasks.items():
        lines += [f"## {task}: {s.metric} by kept dimension", "",
                  (f"Full vectors: {s.full['quality']:.4f} "
                  f"[{s.full['low']:.4f}, {s.full['high']:.4f}]"), "",
                  markdown_table(s.curve[["strategy", "k", "quality", "low", "high", "seed_sd"]],
                                 4), ""]
    return "\n".join(lines)


def write_card(card: Card, out: str | Path) -> dict[str, Path]:
    """Write the card files into ``out`` (each atomically); returns name -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = card_json(card)
    paths = {name: out / name for name in CARD_FILES}
    atomic_write_text(paths["card.json"], json.dumps(data, indent=1) + "\n")
    atomic_write_text(paths["card.md"], card_markdown(card, data))
    curves = pd.concat([s.curve for s in card.tasks.values()], ignore_index=True)
    with atomic_path(paths["curves.csv"]) as tmp:
        curves.to_csv(tmp, index=False)
    figures = [_figure(card, t) for t in card.tasks]
    for fig in figures:
        with atomic_path(out / fig.files[0]) as tmp:
            tmp.write_bytes(fig.png)
        paths[fig.files[0]] = out / fig.files[0]
    verdicts = pd.DataFrame({"verdict": [v for t in card.tasks
                                         for v in data["tasks"][t]["verdicts"]]})
    meta = [("model", f"{card.model_name} ({card.model})"), ("dimension", str(card.d)),
            ("data", f"{card.data.name}: {card.data.about}"),
            ("data fingerprint", card.data.fingerprint),
            ("items", ", ".join(f"{k} {v}" for k, v in card.n.items())),
            ("strategies", ", ".join(card.strategies)),
            ("random-k seeds", ", ".join(map(str, card.seeds))),
            ("intervals", f"{card.ci:.0%} bootstrap over test items, {card.n_boot} resamples"),
            ("cosine order", "cut, then re-normalise"),
            ("drprobe", card.version)]
    tables = [("Verdicts", verdicts, ("Per task and share of full quality: the smallest size "
               "each strategy keeps it at.")),
              ("Smallest dimension per strategy", _critical_table(card),
               ("Interval: bootstrap percentile interval of the smallest size; worst group: the "
               "class (or query group) that loses most at that size."))]
    search = _search_table(card)
    if not search.empty:
        tables.append(("Storage and search time", search, ("float32 bytes per vector; search "
                       "time per query (median of repeats) with first-k vectors of that size.")))
    appendix = ('<h2>card.json</h2><details><summary>the card as JSON</summary>'
                f'<pre id="card-json">{html.escape(json.dumps(data, indent=1))}</pre></details>')
    page = render_page(f"Truncation card: {card.model_name} on {card.data.name}", meta, tables,
                       figures, [], appendix=appendix)
    atomic_write_text(paths["card.html"], page)
    return paths
