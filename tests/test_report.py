"""`drprobe report` on a real tiny run: every figure as non-blank PNG and PDF, one self-contained
HTML page whose tables agree with pandas, figures without data skipped with a note, errors exit 2.
"""

from __future__ import annotations

import base64
import re
import zlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from report_runs import shared_run

from drprobe.analysis.summary import summarize
from drprobe.cli import main
from drprobe.experiment.store import JOB_KEYS, read_results, write_part
from drprobe.report.curves import plot_study
from drprobe.report.html import table_html
from drprobe.report.tables import dr_table, model_table

ALL = ["accuracy-digits", "selectors-digits", "cka-digits", "accuracy-gini-digits", "dr",
       "models", "layers", "pareto", "variants-dr", "variants-curves-digits"]
#: drawn when the run has two variants or more (here: the pretrained network and its twin)
VARIANT_FIGURES = {"variants-dr", "variants-curves-digits"}
NEEDS_MORE = {"selectors-digits": "one selector", "models": "one model/weights",
              "layers": "one layer"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, feature_cache):
    """MobileNetV2 on digits: 2 weights, 2 layers (3 jobs), selectors random and pca_top."""
    return shared_run(feature_cache, tmp_path_factory.mktemp("report") / "run")


@pytest.fixture(scope="module")
def report(run):
    """The report of ``run`` in its default place (``RUN/report``)."""
    code = main(["report", str(run)])
    assert code == 0
    return run / "report"


def png_is_drawn(path) -> bool:
    """Many colours and some ink: not a blank canvas."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    ink = (pixels.min(axis=2) < 200).mean()
    return colours > 50 and ink > 0.01


def pdf_strokes(data: bytes) -> int:
    """Number of line-to operators in the PDF's compressed content streams."""
    assert data.startswith(b"%PDF")
    count = 0
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.DOTALL):
        try:
            count += len(re.findall(rb"[\d.]+ [\d.]+ l\b", zlib.decompress(stream)))
        except zlib.error:
            continue
    return count


def test_pdf_check_tells_blank_from_drawn(tmp_path):
    fig = plt.figure()
    fig.savefig(tmp_path / "blank.pdf")
    plt.close(fig)
    assert pdf_strokes((tmp_path / "blank.pdf").read_bytes()) <= 4  # the background only


@pytest.mark.slow
def test_every_figure_as_png_and_pdf(report):
    for name in ALL:
        assert png_is_drawn(report / f"{name}.png"), name
        assert pdf_strokes((report / f"{name}.pdf").read_bytes()) > 100, name
    written = {p.name for p in report.iterdir()}  # and no temporary files left behind
    assert written == ({f"{n}.{ext}" for n in ALL for ext in ("png", "pdf")}
                       | {"report.html", "variants.csv"})


@pytest.mark.slow
def test_page_is_self_contained_and_embeds_every_figure(report):
    page = (report / "report.html").read_text()
    sources = re.findall(r'<img alt="([^"]+)" src="([^"]+)"', page)
    assert [alt for alt, _ in sources] == ALL
    for alt, src in sources:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix):]) == (report / f"{alt}.png").read_bytes()
    outside = re.sub(r'src="data:[^"]*"', "", page)
    assert "http" not in outside and "href" not in outside and "url(" not in outside
    assert "<link" not in outside and "not drawn" not in outside


@pytest.mark.slow
def test_page_tables_agree_with_pandas(run, report):
    page = (report / "report.html").read_text()
    summary = pd.read_csv(run / "summary.csv")
    table = dr_table(summary)
    assert table_html(table) in page
    key = ["model", "weights", "layer", "selector"]
    at = summary[summary["delta"] == 0.9].set_index(key)["dr"]
    got = table.set_index(key)["DR_0.9"]
    np.testing.assert_allclose(got, at.reindex(got.index).round(3))
    probes = read_results(run / "results")
    models = model_table(probes, summary)
    assert table_html(models) in page
    full = probes[(probes["k"] == probes["d"]) & (probes["selector"] == "random")]
    want = full.groupby(["weights", "layer"])["test_acc"].mean()
    got = models.set_index(["weights", "layer"])["full_acc"]
    assert len(got) == 3
    np.testing.assert_allclose(got, want.reindex(got.index).round(4))
    for needle in ("test-run", "features.14 (160)", "features.13 (96)", "pca_top, random"):
        assert needle in page


@pytest.mark.slow
def test_summary_rebuilt_from_results_matches_the_study(run):
    summary = pd.read_csv(run / "summary.csv")
    rebuilt = summarize(read_results(run / "results"), by=JOB_KEYS)
    key = ["weights", "layer", "selector", "delta"]
    a = summary.set_index(key).sort_index()
    b = rebuilt.set_index(key).reindex(a.index)
    for col in ("full_acc", "f_star", "dr", "k_star", "dr_cka", "k_star_cka"):
        np.testing.assert_allclose(b[col].astype(float), a[col].astype(float), err_msg=col)


@pytest.mark.slow
def test_figures_without_data_are_skipped_with_a_note(run, tmp_path):
    """One job, one selector, no summary.csv or efficiency.csv (rebuilt), SVG files only."""
    small = tmp_path / "small"
    probes = pd.read_parquet(run / "results" / "pretrained-features.14.parquet")
    write_part(probes[probes["selector"] == "random"], small / "results", "one")
    out = tmp_path / "figs"
    assert main(["report", str(small), "--out", str(out), "--formats", "svg",
                 "--no-progress"]) == 0
    drawn = [n for n in ALL if n not in NEEDS_MORE and n not in VARIANT_FIGURES]
    assert {p.name for p in out.iterdir()} == {f"{n}.svg" for n in drawn} | {"report.html"}
    page = (out / "report.html").read_text()
    assert re.findall(r'<img alt="([^"]+)"', page) == drawn
    notes = re.findall(r"<li><b>[^<]*</b> \(([^)]+)\): not drawn: ([^<]+)</li>", page)
    assert {name: reason for name, reason in notes}.keys() == NEEDS_MORE.keys()
    for name, reason in notes:
        assert NEEDS_MORE[name] in reason
    assert "rebuilt from the per-probe results" in page
    assert not (small / "report").exists()


@pytest.mark.slow
def test_demo_figures_still_drawn(run, tmp_path):
    paths = plot_study(read_results(run / "results"), tmp_path)
    assert [p.name for p in paths] == ["accuracy.png", "cka.png", "gini.png"]
    assert all(png_is_drawn(p) for p in paths)


@pytest.mark.parametrize("extra, needle", [
    (["--formats", "png,gif"], "'gif'"),
    (["--formats", ""], "png, pdf, svg"),
])
@pytest.mark.slow
def test_bad_formats_exit_2_nothing_written(run, tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    assert main(["report", str(run), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_not_a_run_folder_or_output_is_a_file(run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0]
    assert list(empty.iterdir()) == []
    taken = tmp_path / "taken"
    taken.write_text("keep")
    assert main(["report", str(run), "--out", str(taken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0]
    assert taken.read_text() == "keep"
