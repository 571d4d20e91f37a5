"""Command-line interface: ``drprobe demo | layers | models | datasets``.

Every refusal is one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from drprobe.errors import DrprobeError, InvalidValueError

DEMO_FRACTIONS = "0.005,0.01,0.02,0.05,0.1,0.2,0.3,0.5,0.8,1"


def _numbers(text: str, kind: type, what: str) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        name = "numbers" if kind is float else "integers"
        raise InvalidValueError(f"{what} must be comma-separated {name}; got {text!r}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="drprobe")
def app() -> None:
    """Measure diffused redundancy in pretrained representations."""


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
@click.option("--fractions", default=DEMO_FRACTIONS, show_default=True,
              help="Comma-separated fractions of the layer's neurons, each in (0, 1].")
@click.option("--seeds", default="1,2,3", show_default=True,
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

    \b
    Example:
      drprobe demo --out drprobe-demo --n-train 5000 --layers penultimate
    """
    from drprobe.experiment.study import StudySpec, prepare_output, run_study, summary_table
    from drprobe.report.plots import plot_study

    for name, value in (("--n-train", n_train), ("--n-test", n_test), ("--image-size", image_size)):
        if value < 1:
            raise InvalidValueError(f"{name} must be a positive integer; got {value}")
    prepare_output(out)
    spec = StudySpec(
        model=model, weights=("pretrained", "random") if twin else ("pretrained",),
        layers=tuple(v.strip() for v in layers.split(",") if v.strip()), dataset=dataset,
        n_train=n_train, n_test=n_test, image_size=image_size,
        fractions=_numbers(fractions, float, "--fractions"),
        seeds=_numbers(seeds, int, "--seeds"), data_root=str(data_root) if data_root else None,
        checkpoint=str(checkpoint) if checkpoint else None,
    )
    results, summary = run_study(
        spec, out, cache_dir=cache_dir, progress=progress, log=lambda m: click.echo(m, err=True)
    )
    figures = plot_study(results, out)
    click.echo(f"\nDiffused redundancy of {model} on {dataset} "
               f"({results['n_train'].iloc[0]} train / {results['n_val'].iloc[0]} val / "
               f"{results['n_test'].iloc[0]} test):\n")
    click.echo(summary_table(summary).to_string(index=False))
    click.echo(f"\nresults: {out / 'results'}   summary: {out / 'summary.md'}")
    click.echo("figures: " + ", ".join(str(f) for f in figures))


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


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning refusals into one line and exit status 2."""
    try:
        code = app.main(args=argv, prog_name="drprobe", standalone_mode=False)
    except DrprobeError as err:
        click.echo(f"drprobe: error: {err}", err=True)
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
