"""Command-line interface: ``drprobe demo | run | pretrain | card | extract | probe | layers |
models | datasets | report | results``. Every refusal is one line on stderr and exit status 2.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from drprobe.card.command import card as _card
from drprobe.errors import DrprobeError, InvalidValueError
from drprobe.experiment.demo import DEMO_FRACTIONS
from drprobe.pipeline import study as _study
from drprobe.pretrain.command import pretrain as _pretrain
from drprobe.selectors.family import DEFAULT_SEEDS
from drprobe.validation import comma_list, positive_options


def _listed(values: tuple) -> str:
    """A default tuple as the comma-separated text an option takes."""
    return ",".join(f"{v:g}" for v in values)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             commands={"card": _card, "pretrain": _pretrain, "study": _study})
@click.version_option(package_name="drprobe")
def app() -> None:
    """Measure diffused redundancy in pretrained representations."""


def _report_run(title: str, output, out: Path) -> None:
    """Ask the report for the run's tables and quick-look figures, then print the DR table."""
    from drprobe.report.publish import publish_run
    from drprobe.report.run_tables import summary_table

    results, summary = output.results, output.summary
    figures = publish_run(results, summary, out)
    sizes = results[["n_train", "n_val", "n_test"]].drop_duplicates()
    if len(sizes) == 1:  # one task size: say it in the title (the demo's form)
        n_train, n_val, n_test = sizes.iloc[0]
        title += f" ({n_train} train / {n_val} val / {n_test} test)"
    click.echo(f"\n{title}:\n")
    click.echo(summary_table(summary).to_string(index=False))
    click.echo(f"\nresults: {out / 'results'}   summary: {out / 'summary.md'}")
    if figures:
        click.echo("figures: " + ", ".join(str(f) for f in figures))


def _echo_err(message: str) -> None:
    """One line on stderr that does not break the progress bars."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


@app.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("drprobe-demo"),
              show_default=True, help="Output folder.")
@click.option("--model", default="builtin:mobilenet_v2", show_default=True,
              help="Model spec (see `drprobe models`).")
@click.option("--layers", default="penultimate,features.14", show_default=True,
              help="Comma-separated layer names (see `drprobe layers MODEL`).")
@click.option("--dataset", default="fashion-mnist", show_default=True,
              help="Dataset (see `drprobe datasets`).")
@click.option("--n-train", type=int, default=10_000, show_default=True,
              help="Training examples (stratified subsample; 10% become validation).")
@click.option("--n-test", type=int, default=2_000, show_default=True, help="Test examples.")
@click.option("--image-size", type=int, default=64, show_default=True, help="Input side in pixels.")
@click.option("--fractions", default=_listed(DEMO_FRACTIONS), show_default=True,
              help="Comma-separated fractions of the layer's neurons, each in (0, 1].")
@click.option("--seeds", default=_listed(DEFAULT_SEEDS), show_default=True,
              help="Comma-separated seeds of the random subsets.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Weights file to use instead of the packaged pretrained weights "
                   "(state_dict, robustness, MRL/FF, AugReg .npz).")
@click.option("--twin/--no-twin", default=True, show_default=True,
              help="Also probe the seeded random-init twin (the control).")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Folder holding the dataset's files.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Feature cache [default: $DRPROBE_CACHE or ~/.cache/drprobe].")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show progress bars.")
def demo(out, model, layers, dataset, n_train, n_test, image_size, fractions, seeds, checkpoint,
         twin, data_root, cache_dir, progress) -> None:
    """Random-subset probes of a pretrained net and its random-init twin: DR table and figures.

    The demo is `drprobe run configs/quickstart.yaml` with these options applied; rerunning it
    into the same folder skips the finished jobs.

    \b
    Example:
      drprobe demo --out drprobe-demo --n-train 5000 --layers penultimate
    """
    from drprobe.experiment.demo import demo_config
    from drprobe.experiment.preflight import prepare_output
    from drprobe.experiment.runner import run_experiment

    positive_options(n_train=n_train, n_test=n_test, image_size=image_size)
    prepare_output(out)
    config = demo_config(
        model=model, layers=comma_list(layers), dataset=dataset, n_train=n_train, n_test=n_test,
        image_size=image_size, fractions=comma_list(fractions, float, "--fractions"),
        seeds=comma_list(seeds, int, "--seeds"), twin=twin,
        checkpoint=str(checkpoint) if checkpoint else None,
        data_root=str(data_root) if data_root else None)
    output = run_experiment(config, out, cache_dir=cache_dir, progress=progress,
                            log=_echo_err if progress else None)
    _report_run(f"Diffused redundancy of {config.models[0].label} on {dataset}", output, out)


@app.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder [default: runs/NAME, NAME from the config].")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Run jobs in this process or as Ray tasks.")
@click.option("--address", default=None,
              help="Ray head HOST:PORT, as `ray start --head` printed it (with --executor ray; "
                   "see docs/many-machines.md) [default: start a local Ray].")
@click.option("--dry-run", is_flag=True, help="List the jobs and an estimated cost; run nothing.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Feature cache [default: $DRPROBE_CACHE or ~/.cache/drprobe].")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show progress bars.")
def run(config, out, executor, address, dry_run, cache_dir, progress) -> None:
    """Run an experiment config (YAML): every model x weights x dataset x layer job.

    Finished jobs are skipped when the same config is run into the same folder again, so a
    killed run resumes where it stopped. See configs/ for examples.

    \b
    Example:
      drprobe run configs/quickstart.yaml --dry-run
      drprobe run configs/offline-study.yaml --out runs/offline
      drprobe run configs/offline-study.yaml --executor ray --address 10.0.0.1:6379
    """
    from drprobe.experiment.config import load_config
    from drprobe.experiment.dryrun import format_plan
    from drprobe.experiment.plan import plan_jobs
    from drprobe.experiment.preflight import check_run_folder
    from drprobe.experiment.runner import run_experiment
    from drprobe.experiment.store import part_path

    if address and executor != "ray":
        raise InvalidValueError("--address needs --executor ray")
    cfg = load_config(config)
    out = out if out is not None else Path("runs") / cfg.name
    if dry_run:
        jobs = plan_jobs(cfg)
        check_run_folder(cfg, out)
        done = {j.id for j in jobs if part_path(out, "results", j.id).exists()}
        click.echo(format_plan(cfg, jobs, done, widths=True))
        return
    output = run_experiment(cfg, out, executor=executor, address=address, cache_dir=cache_dir,
                            progress=progress,
                            log=_echo_err if progress and executor == "local" else None)
    click.echo(f"ran {len(output.ran)} job(s), {len(output.skipped)} already complete")
    _report_run(f"Experiment {cfg.name}", output, out)


@app.command()
@click.argument("model")
@click.argument("layer")
@click.argument("dataset")
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--n", type=int, default=None, help="Stratified subsample size [default: all].")
@click.option("--image-size", type=int, default=None, help="Input side [default: the model's].")
@click.option("--max-tokens", type=int, default=None,
              help="Token limit of a text model on a text:PATH dataset [default: the model's].")
@click.option("--pooling", default="avg", show_default=True, help="avg or flatten (cls, mean: text).")
@click.option("--weights", type=click.Choice(["pretrained", "random"]), default="pretrained",
              show_default=True, help="Packaged weights or the seeded random-init twin.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random init.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Weights file to load instead of the packaged weights.")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Folder holding the dataset's files.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Feature cache [default: $DRPROBE_CACHE or ~/.cache/drprobe].")
@click.option("--out", "export", type=click.Path(path_type=Path), default=None,
              help="Also export to this .npz (X_SPLIT, y_SPLIT; the other split's arrays already "
                   "in the file are kept), readable as the dataset features:FILE.npz.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
def extract(model, layer, dataset, split, n, image_size, max_tokens, pooling, weights, seed,
            checkpoint, data_root, cache_dir, export, progress) -> None:
    """Extract one layer's features into the cache and print the entry (optionally export).

    \b
    Example:
      drprobe extract builtin:mobilenet_v2 features.14 digits --split train --image-size 32 \\
          --out digits-f14.npz
      drprobe extract builtin:mobilenet_v2 features.14 digits --split test --image-size 32 \\
          --out digits-f14.npz
      drprobe probe digits-f14.npz --out runs/digits-f14
    """
    from drprobe.experiment.store import export_npz
    from drprobe.features import get_features

    positive_options(n=n, image_size=image_size, max_tokens=max_tokens)
    if max_tokens is not None:
        if image_size is not None or not dataset.startswith("text:"):
            raise InvalidValueError("--max-tokens sets a text model's token limit on a text:PATH "
                                    "dataset, without --image-size; images take --image-size")
        image_size = max_tokens  # the extractor's one input-size setting
    if export is not None and export.suffix != ".npz":
        raise InvalidValueError(f"--out must name a .npz file; got {str(export)!r}")
    if checkpoint is not None and weights == "random":
        raise InvalidValueError("--checkpoint replaces the pretrained weights; it cannot be "
                                "combined with --weights random")
    feats = get_features(model, layer, dataset, split, weights="checkpoint" if checkpoint else
                         weights, seed=seed, checkpoint=checkpoint, pooling=pooling,
                         image_size=image_size, n=n, data_root=data_root, cache_dir=cache_dir,
                         progress=progress)
    click.echo(f"entry: {feats.path}")
    click.echo(f"features: {feats.X.shape[0]} x {feats.X.shape[1]} {feats.X.dtype}, "
               f"{len(set(feats.y.tolist()))} classes")
    if export is not None:
        click.echo(f"exported: {export_npz(feats.X, feats.y, split, export)}")


@app.command()
@click.argument("features", type=click.Path(path_type=Path))
@click.option("--layer", default="features", show_default=True,
              help="The layer's name in the results (the features' own name).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder [default: runs/probe-<FEATURES name>].")
@click.option("--selectors", default="random", show_default=True,
              help="Comma-separated selectors (random, prefix, pca_top, pca_least, ...).")
@click.option("--fractions", default=_listed(DEMO_FRACTIONS), show_default=True,
              help="Comma-separated fractions of the neurons, each in (0, 1].")
@click.option("--counts", default=None,
              help="Comma-separated neuron counts instead of fractions (e.g. 8,16,32).")
@click.option("--seeds", default=_listed(DEFAULT_SEEDS), show_default=True,
              help="Comma-separated seeds.")
@click.option("--n-train", type=int, default=None, help="Training examples [default: all].")
@click.option("--n-test", type=int, default=None, help="Test examples [default: all].")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show progress bars.")
def probe(features, layer, out, selectors, fractions, counts, seeds, n_train, n_test,
          progress) -> None:
    """Probe precomputed features (npz, npy folder, safetensors, parquet): a run folder.

    FEATURES holds X_train, y_train, X_test, y_test (see `drprobe extract --out`).

    \b
    Example:
      drprobe probe digits-f14.npz --layer features.14 --fractions 0.05,0.1,0.5,1 --seeds 1,2
    """
    from drprobe.experiment.config import parse_config
    from drprobe.experiment.runner import run_experiment

    positive_options(n_train=n_train, n_test=n_test)
    grid = ({"counts": list(comma_list(counts, int, "--counts"))} if counts else
            {"fractions": list(comma_list(fractions, float, "--fractions"))})
    config = parse_config({
        "name": f"probe-{features.stem}", "models": [{"spec": "precomputed",
                                                     "weights": ["pretrained"]}],
        "layers": [layer], "datasets": [{"name": f"features:{features}", "label": features.stem,
                                         "n_train": n_train, "n_test": n_test}],
        "selectors": list(comma_list(selectors)), "seeds": list(comma_list(seeds, int, "--seeds")),
        **grid,
    }, source="probe options")
    out = out if out is not None else Path("runs") / config.name
    output = run_experiment(config, out, progress=progress,
                            log=_echo_err if progress else None)
    _report_run(f"Diffused redundancy of {features}", output, out)


@app.command()
@click.argument("model")
@click.option("--input-size", type=int, default=None, help="Input side in pixels [default: native].")
@click.option("--weights", default="random", show_default=True,
              help="pretrained or random (shapes do not depend on it).")
def layers(model, input_size, weights) -> None:
    """List a model's layers with their output shapes.

    \b
    Example:
      drprobe layers builtin:mobilenet_v2 --input-size 64
    """
    from drprobe.sources.layers import list_layers
    from drprobe.sources.models import load_model

    for info in list_layers(load_model(model, weights), input_size):
        shape = "x".join(str(s) for s in info.shape)
        click.echo(f"{info.name:<32} {info.kind:<24} {shape}")


@app.command()
def models() -> None:
    """List the model specs drprobe knows.

    \b
    Example:
      drprobe models
    """
    from drprobe.sources.models import available_models

    click.echo("\n".join(available_models()))


@app.command()
def datasets() -> None:
    """List the datasets drprobe knows.

    \b
    Example:
      drprobe datasets
    """
    from drprobe.sources.datasets import available_datasets

    click.echo("\n".join(available_datasets()))


@app.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: RUN/report].")
@click.option("--formats", default="png,pdf", show_default=True,
              help="Comma-separated figure file formats: png, pdf, svg.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar.")
@click.option("--reference", default=None, help="Variant compared with in variants.csv.")
def report(run, out, formats, progress, reference) -> None:
    """Figures of a run folder (PNG and PDF) and one self-contained HTML page.

    \b
    Example:
      drprobe demo --out drprobe-demo
      drprobe report drprobe-demo --out drprobe-demo/report --formats png,pdf
    """
    from drprobe.report.build import build_report

    click.echo(f"report: {build_report(run, out, formats=formats, progress=progress, reference=reference)}")


@app.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--sql", default=None,
              help="One SQL statement over the views results, timings, summary, efficiency, "
                   "fairness [default: a table per model, weights, layer, dataset, selector].")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Write the answer to this CSV file instead of printing it.")
def results(run, sql, csv_path) -> None:
    """Query a run folder's results with SQL (DuckDB) and print or export the answer.

    \b
    Example:
      drprobe results drprobe-demo
      drprobe results drprobe-demo --sql "SELECT layer, fraction, avg(test_acc) AS acc
        FROM results GROUP BY ALL ORDER BY ALL"
      drprobe results drprobe-demo --sql "SELECT * FROM summary" --csv summary.csv
    """
    from drprobe.experiment.query import query, write_csv

    table = query(run, sql)
    if csv_path is not None:
        write_csv(table, csv_path)
        click.echo(f"wrote {len(table)} rows to {csv_path}", err=True)
    else:
        click.echo(table.to_string(index=False))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a scheduler's cancel) raises KeyboardInterrupt like
    Ctrl-C, so the work unwinds: scratch files are removed and nothing is half-written. Only
    the main thread can set signal handlers; elsewhere the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: a refusal is one line and exit 2; SIGTERM or Ctrl-C unwinds, exit 130."""
    try:
        with sigterm_as_interrupt():
            code = app.main(args=argv, prog_name="drprobe", standalone_mode=False)
    except DrprobeError as err:
        click.echo(f"drprobe: error: {err}", err=True)
        return 2
    except click.UsageError as err:  # wrong option type, unknown option, missing argument
        where = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        click.echo(f"drprobe: error: {err.format_message()}{where}", err=True)
        return 2
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("drprobe: interrupted", err=True)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
