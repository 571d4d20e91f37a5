"""The ``drprobe pretrain`` command (click); ``drprobe.cli`` adds it to the app.

Importing this module is cheap: the training code is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from drprobe.validation import comma_list

__all__ = ["pretrain"]


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: runs/NAME, NAME from the config].")
@click.option("--variants", default=None, help="Comma-separated variants to train [default: all].")
@click.option("--device", default=None, help="Override the config's device (auto, cpu, cuda).")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch per process [default: torch's; 1 with --jobs].")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Runs trained at once, one process each (2 cores: --jobs 2 --threads 1).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show progress bars.")
def pretrain(config, out, variants, device, threads, jobs, progress) -> None:
    """Pretrain the variants of a config (YAML), each with every seed: OUT/VARIANT/seedK/.

    Each run writes model.pt (probe it as the model spec ckpt:OUT/VARIANT/seedK/model.pt)
    and provenance.json (with its manipulation checks, shown as a table at the end);
    finished runs are skipped and killed ones resume from their last epoch. See
    docs/pretrain.md and configs/study/pretrain.yaml.

    \b
    Example:
      drprobe pretrain configs/study/pretrain-tiny.yaml --out runs/pretrain-tiny
    """
    from drprobe.pretrain.checks import checks_table, format_checks_table
    from drprobe.pretrain.config import load_pretrain_config
    from drprobe.pretrain.grid import run

    cfg = load_pretrain_config(config)
    out = out if out is not None else Path("runs") / cfg.name
    names = list(comma_list(variants)) if variants else None
    results = run(cfg, out, progress=progress, device=device, threads=threads, jobs=jobs,
                  variants=names)
    for r in results:
        state = "trained" if r.trained else "done   "
        click.echo(f"{state} {r.variant}/seed{r.seed}  test_acc {r.provenance['test_acc']:.3f}  "
                   f"{r.provenance['wall_seconds']:.0f}s  {r.spec}")
    table = checks_table(out)
    mine = {(r.variant, r.seed) for r in results}
    table = table[[(v, s) in mine for v, s in zip(table["variant"], table["seed"])]]
    click.echo("manipulation checks (source test set; columns: docs/pretrain.md):")
    click.echo(format_checks_table(table))
    click.echo(f"index: {out / 'models.csv'}")
