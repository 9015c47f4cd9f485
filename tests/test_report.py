import math

import numpy as np
import pandas as pd
import pytest

import matplotlib.pyplot as plt
from matplotlib.container import BarContainer

from clcore.report.figures import (EXPERIMENT_FIGURES, FIGURES, accuracy_curve, experiment_accuracy_curve,
                                   experiment_forgetting, write_experiment_figure, write_figure)
from clcore.report.tables import format_mean_std, summary_table, write_experiment_table, write_summary
from clcore.results import ACCURACY_SCHEMA, RUNS_SCHEMA, SETTINGS, SUMMARY_METRICS, write_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T = 3
# (benchmark, run_name, buffer_size, seed) -> (class_il_faa, task_il_faa, class_il_forgetting_mammoth)
RUNS = {
    ("seq-a", "derpp", 200, 0): (60.0, 90.0, 20.0),
    ("seq-a", "derpp", 200, 1): (62.0, 91.0, 18.0),
    ("seq-a", "derpp", 200, 2): (67.0, 95.0, 13.0),
    ("seq-a", "sgd", 0, 0): (30.0, 70.0, 60.0),
    ("seq-a", "sgd", 0, 1): (32.0, 74.0, 58.0),
    ("seq-a", "er-h1a2b3c", 200, 0): (50.0, 85.0, float("nan")),
    ("seq-b", "sgd", 0, 0): (25.0, 65.0, 70.0),
}


def _runs_frame() -> pd.DataFrame:
    rows = []
    for (benchmark, name, buffer, seed), (cil, til, forgetting) in RUNS.items():
        row = dict(benchmark=benchmark, method=name.partition("-h")[0], run_name=name, buffer_size=buffer,
                   seed=seed, hparam_hash=name.partition("-h")[2] or None, wall_time_s=360.0, device="cpu",
                   device_hours=0.1, peak_host_mem_mb=500.0, peak_gpu_mem_mb=None,
                   git_commit="abc", clcore_version="0.1", run_json=f"{name}/run.json")
        row.update({f"{s}_{m}": float("nan") for s in SETTINGS for m in SUMMARY_METRICS})
        row.update(class_il_faa=cil, task_il_faa=til, class_il_forgetting_mammoth=forgetting, class_il_aia=cil)
        rows.append(row)
    return pd.DataFrame(rows)


def _accuracy_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for (benchmark, name, buffer, seed) in RUNS:
        for setting in SETTINGS:
            for after in range(-1, T):
                for task in range(T):
                    rows.append(dict(benchmark=benchmark, method=name.partition("-h")[0], run_name=name,
                                     buffer_size=buffer, seed=seed, setting=setting, after_task=after,
                                     eval_task=task, value=float(rng.uniform(0, 100))))
    return pd.DataFrame(rows)


def _write_tables(tmp_path, runs_frame):
    runs, accuracy = tmp_path / "runs.parquet", tmp_path / "accuracy.parquet"
    write_table(runs_frame, RUNS_SCHEMA, runs)
    write_table(_accuracy_frame(), ACCURACY_SCHEMA, accuracy)
    return runs, accuracy


@pytest.fixture
def tables(tmp_path):
    return _write_tables(tmp_path, _runs_frame())


def test_summary_table_means_and_stds():
    table = summary_table(_runs_frame(), metrics=("faa", "forgetting_mammoth"))
    assert list(zip(table.benchmark, table.buffer_size, table.run_name)) == [
        ("seq-a", 0, "sgd"), ("seq-a", 200, "derpp"), ("seq-a", 200, "er-h1a2b3c"), ("seq-b", 0, "sgd")]
    derpp = table.set_index(["benchmark", "run_name"]).loc[("seq-a", "derpp")]
    assert derpp.n_seeds == 3
    assert derpp.class_il_faa_mean == pytest.approx(63.0)
    assert derpp.class_il_faa_std == pytest.approx(math.sqrt(13.0))  # (9 + 1 + 16) / 2
    assert derpp.task_il_faa_mean == pytest.approx(92.0)
    assert derpp.task_il_faa_std == pytest.approx(math.sqrt(7.0))  # (4 + 1 + 9) / 2
    sgd = table.set_index(["benchmark", "run_name"]).loc[("seq-a", "sgd")]
    assert (sgd.class_il_faa_mean, sgd.class_il_faa_std) == pytest.approx((31.0, math.sqrt(2.0)))
    single = table.set_index(["benchmark", "run_name"]).loc[("seq-a", "er-h1a2b3c")]
    assert single.n_seeds == 1 and single.class_il_faa_mean == 50.0 and math.isnan(single.class_il_faa_std)
    assert math.isnan(single.class_il_forgetting_mammoth_mean)


@pytest.mark.parametrize("mean, std, digits, text", [
    (64.8812, 1.1749, 2, "64.88 ± 1.17"),
    (64.8812, 1.1749, 1, "64.9 ± 1.2"),
    (0.0, 0.0, 2, "0.00 ± 0.00"),
    (50.0, float("nan"), 2, "50.00"),
    (float("nan"), 1.0, 2, "–"),
    (None, None, 2, "–"),
])
def test_format_mean_std(mean, std, digits, text):
    assert format_mean_std(mean, std, digits) == text


def test_write_summary_marks_missing_and_partial_runs(tables, tmp_path):
    expected = pd.DataFrame([
        dict(benchmark="seq-a", run_name="derpp", buffer_size=200, n_seeds_expected=3),
        dict(benchmark="seq-a", run_name="sgd", buffer_size=0, n_seeds_expected=2),
        dict(benchmark="seq-a", run_name="er-h1a2b3c", buffer_size=200, n_seeds_expected=3),
        dict(benchmark="seq-a", run_name="er_ace", buffer_size=200, n_seeds_expected=3),
        dict(benchmark="seq-b", run_name="sgd", buffer_size=0, n_seeds_expected=1),
    ])
    md, csv = tmp_path / "out" / "summary.md", tmp_path / "out" / "summary.csv"
    write_summary(tables[0], md, csv, expected=expected)
    text = md.read_text(encoding="utf-8")
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "## seq-a" in text and "## seq-b" in text
    assert lines["er_ace"] == "| er_ace | 200 | 0 | – | – | – |"
    # 95 % t intervals by hand: mean ± t(0.975, 2) · std / √3 with t = 4.3027 (half widths 8.96, 6.57, 8.96)
    assert lines["derpp"] == ("| derpp | 200 | 3 | 63.00 ± 3.61 [54.04, 71.96] | 92.00 ± 2.65 [85.43, 98.57] | "
                              "17.00 ± 3.61 [8.04, 25.96] |")
    assert lines["er-h1a2b3c"] == "| er-h1a2b3c | 200 | 1/3 | 50.00 | 85.00 | – |"
    frame = pd.read_csv(csv)
    missing = frame[frame.run_name == "er_ace"].iloc[0]
    assert missing.n_seeds == 0 and missing.n_seeds_expected == 3 and math.isnan(missing.class_il_faa_mean)
    assert frame.loc[frame.run_name == "derpp", "class_il_faa_std"].item() == pytest.approx(math.sqrt(13.0))
    assert len(frame) == 5 and not list(tmp_path.glob("out/*.part"))


def test_write_summary_without_expected(tables, tmp_path):
    write_summary(tables[0], tmp_path / "s.md", tmp_path / "s.csv")
    # two seeds: t(0.975, 1) = 12.706, std / √2 = 1, 2, 1
    assert ("| sgd | 0 | 2 | 31.00 ± 1.41 [18.29, 43.71] | 72.00 ± 2.83 [46.59, 97.41] | 59.00 ± 1.41 [46.29, 71.71] |"
            in (tmp_path / "s.md").read_text())
    assert len(pd.read_csv(tmp_path / "s.csv")) == 4


@pytest.mark.parametrize("kind", FIGURES)
@pytest.mark.parametrize("benchmark", ["seq-a", "seq-b"])
def test_write_figure(tables, tmp_path, kind, benchmark):
    png, pdf = tmp_path / "fig" / f"{kind}.png", tmp_path / "fig" / f"{kind}.pdf"
    write_figure(kind, *tables, benchmark, png, pdf)
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert not list(tmp_path.glob("fig/*.part"))


def test_write_figure_rejects_missing_benchmark_and_kind(tables, tmp_path):
    with pytest.raises(ValueError, match="no runs for benchmark 'seq-z'"):
        write_figure("final_accuracy", *tables, "seq-z", tmp_path / "f.png", tmp_path / "f.pdf")
    with pytest.raises(ValueError, match="unknown figure"):
        write_figure("pie_chart", *tables, "seq-a", tmp_path / "f.png", tmp_path / "f.pdf")
    assert not (tmp_path / "f.png").exists()


def test_curve_shows_a_final_only_run_as_one_point():
    runs = _runs_frame()
    runs.loc[runs.run_name == "sgd", "class_il_aia"] = float("nan")  # as Joint in `final` mode
    fig = accuracy_curve(runs, _accuracy_frame(), "seq-a")
    points = {line.get_label(): len(line.get_xdata()) for line in fig.axes[0].lines}
    assert points["sgd"] == 1 and points["derpp (buf 200)"] == T


def test_experiment_table_puts_published_numbers_beside_ours_and_shows_missing_runs(tmp_path):
    from pathlib import Path

    runs = _runs_frame()
    runs = runs[runs.run_name.isin(["derpp", "sgd"]) & (runs.benchmark == "seq-a")].assign(benchmark="seq-cifar10")
    write_table(runs, RUNS_SCHEMA, tmp_path / "runs.parquet")
    asked = [dict(benchmark="seq-cifar10", method=m, run_name=m, buffer_size=b, n_seeds_expected=3)
             for m, b in (("sgd", 0), ("derpp", 200), ("er", 200))]  # er: deliberately never run
    reference = Path(__file__).resolve().parents[1] / "config/reference/baselines.csv"
    out = {ext: tmp_path / f"t.{ext}" for ext in ("md", "tex", "csv")}
    table = write_experiment_table(tmp_path / "runs.parquet", asked, "DER Table 2", out["md"], out["tex"], out["csv"],
                                   reference_csv=reference, pairs=[["derpp", "sgd"]])
    md = out["md"].read_text()
    # derpp − sgd on the shared seeds 0, 1: class-IL (60, 62) − (30, 32) = 30, 30 (no spread: no test);
    # task-IL (90, 91) − (70, 74) = 20, 17: 18.5 ± 12.706 · 1.5, p = 1 − 2 atan(18.5 / 1.5) / π = 0.0515
    assert "| derpp − sgd | 200 | 2 | +30.00 [+30.00, +30.00] | – | +18.50 [-0.56, +37.56] | 0.0515 |" in md
    assert "derpp − sgd, buffer 200: seed(s) 2 ran only for derpp, so they are not in the pair." in md
    paired_row = pd.read_csv(out["csv"]).query("kind == 'paired'").iloc[0]
    assert paired_row.task_il_p_value == pytest.approx(1 - 2 * math.atan(12.0 + 1 / 3) / math.pi)
    # derpp: ours 63.00 ± 3.61 over (60, 62, 67); DER Table 2 buffer 200: 64.88 ± 1.17
    assert "| derpp | 200 | 3 | 63.00 ± 3.61 [54.04, 71.96] | 64.88 ± 1.17 | -1.88 | 92.00 ± 2.65" in md
    assert md.count("| 0.300 |") == 1  # derpp's cost: 3 runs x 0.1 device-hours
    assert "| er | 200 | 0 | – | 44.79 ± 1.86 | – |" in md  # missing, never 0
    assert "| sgd | 0 | 2/3 | 31.00 ± 1.41 [18.29, 43.71] | 19.62 ± 0.05 | +11.38 |" in md
    assert "| er | 200 | 0 | – | 44.79 ± 1.86 | – | – | 91.19 ± 0.94 | – | – |" in md
    assert "Cost: 0.500 device-hours over 5 runs on cpu" in md
    assert np.isnan(table.set_index("run_name").loc["er", "class_il_faa_mean"])
    tex = out["tex"].read_text()
    assert r"\begin{tabular}" in tex and r"63.00 $\pm$ 3.61" in tex and "--" in tex


def test_experiment_table_marks_listed_but_untranscribed_published_values(tmp_path):
    """config/reference/ser.csv lists SER's cells with confidence 'missing': shown as NA, not left out."""
    from pathlib import Path

    runs = _runs_frame()
    runs = runs[(runs.run_name == "derpp") & (runs.benchmark == "seq-a")].assign(benchmark="seq-fgimagenet",
                                                                                  buffer_size=2000)
    write_table(runs, RUNS_SCHEMA, tmp_path / "runs.parquet")
    asked = [dict(benchmark="seq-fgimagenet", method="derpp", run_name="derpp", buffer_size=2000, n_seeds_expected=3)]
    references = [Path(__file__).resolve().parents[1] / f"config/reference/{f}.csv" for f in ("baselines", "ser")]
    out = {ext: tmp_path / f"t.{ext}" for ext in ("md", "tex", "csv")}
    write_experiment_table(tmp_path / "runs.parquet", asked, "SER main", out["md"], out["tex"], out["csv"],
                           reference_csv=references)
    md = out["md"].read_text()
    assert "| derpp | 2000 | 3 | 63.00 ± 3.61 [54.04, 71.96] | NA | – |" in md and "NA = a published value not transcribed" in md


def test_a_blocks_paper_key_keeps_that_papers_numbers_only(tmp_path):
    """A WSCL block's plain DER++ on seq-cifar10 is not the DER paper's: with `paper: sorrenti2024wscl` its cell
    reads WSCL's (not transcribed: NA), not DER Table 2's 64.88."""
    from pathlib import Path

    runs = _runs_frame()
    runs = runs[(runs.run_name == "derpp") & (runs.benchmark == "seq-a")].assign(benchmark="seq-cifar10")
    write_table(runs, RUNS_SCHEMA, tmp_path / "runs.parquet")
    asked = [dict(benchmark="seq-cifar10", method="derpp", run_name="derpp", buffer_size=200, n_seeds_expected=3)]
    references = [Path(__file__).resolve().parents[1] / f"config/reference/{f}.csv" for f in ("baselines", "wscl")]
    out = {ext: tmp_path / f"t.{ext}" for ext in ("md", "tex", "csv")}
    for paper, cell in ((None, "64.88 ± 1.17"), ("sorrenti2024wscl", "NA")):
        write_experiment_table(tmp_path / "runs.parquet", asked, "T", out["md"], out["tex"], out["csv"],
                               reference_csv=references, paper=paper)
        assert f"| derpp | 200 | 3 | 63.00 ± 3.61 [54.04, 71.96] | {cell} |" in out["md"].read_text()


# ---- Per-experiment figures. Forgetting per run: class-IL = the fixture's forgetting, task-IL = half of it.

def _experiment_runs() -> pd.DataFrame:
    runs = _runs_frame()
    return runs.assign(class_il_forgetting=runs.class_il_forgetting_mammoth,
                       task_il_forgetting=runs.class_il_forgetting_mammoth / 2)


def _rows(*keys):
    return [dict(benchmark=b, method=n.partition("-h")[0], run_name=n, buffer_size=buf, n_seeds_expected=3)
            for b, n, buf in keys]


PRESENT = _rows(("seq-a", "sgd", 0), ("seq-a", "derpp", 200), ("seq-b", "sgd", 0))
WITH_MISSING = _rows(("seq-a", "sgd", 0), ("seq-a", "derpp", 200), ("seq-a", "er-h1a2b3c", 200),
                     ("seq-a", "er_ace", 200))  # er_ace never ran; er-h1a2b3c ran but has NaN forgetting


@pytest.fixture
def experiment_tables(tmp_path):
    return _write_tables(tmp_path, _experiment_runs())


@pytest.mark.parametrize("kind", EXPERIMENT_FIGURES)
@pytest.mark.parametrize("rows, missing", [
    (PRESENT, []),
    (WITH_MISSING, ["seq-a: er_ace (buf 200)"]),
    (_rows(("seq-cifar10", "sgd", 0), ("seq-cifar10", "er", 200)), ["seq-cifar10: sgd", "seq-cifar10: er (buf 200)"]),
], ids=["all-runs", "one-row-missing", "no-runs-at-all"])
def test_write_experiment_figure(experiment_tables, tmp_path, kind, rows, missing):
    png, pdf = tmp_path / "fig" / f"x_{kind}.png", tmp_path / "fig" / f"x_{kind}.pdf"
    assert write_experiment_figure(kind, *experiment_tables, rows, "Table X", png, pdf) == missing
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert not list(tmp_path.glob("fig/*.part"))


def test_write_experiment_figure_rejects_unknown_kind(experiment_tables, tmp_path):
    with pytest.raises(ValueError, match="unknown experiment figure 'accuracy_matrix'"):
        write_experiment_figure("accuracy_matrix", *experiment_tables, PRESENT, "T", tmp_path / "f.png",
                                tmp_path / "f.pdf")
    assert not (tmp_path / "f.png").exists()


def _bar_heights(ax) -> dict[str, dict[str, float]]:
    """setting label -> x tick label -> bar height."""
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    return {c.get_label(): {tick: bar.get_height() for tick, bar in zip(ticks, c.patches)}
            for c in ax.containers if isinstance(c, BarContainer)}


def test_experiment_forgetting_bars_are_means_over_seeds_and_missing_rows_are_not_zero():
    fig = experiment_forgetting(_experiment_runs(), _accuracy_frame(), WITH_MISSING, "Table X")
    ax, = fig.axes
    heights = _bar_heights(ax)
    assert heights["Class-IL"]["derpp (buf 200)"] == pytest.approx(17.0)  # (20 + 18 + 13) / 3
    assert heights["Task-IL"]["derpp (buf 200)"] == pytest.approx(8.5)
    assert heights["Class-IL"]["sgd"] == pytest.approx(59.0)
    for setting in ("Class-IL", "Task-IL"):
        assert math.isnan(heights[setting]["er_ace (buf 200) (missing)"])  # no bar, not a bar of 0
        assert math.isnan(heights[setting]["er-h1a2b3c (buf 200)"])  # ran, but forgetting undefined (as Joint)
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("no runs") == 1 and texts.count("n/a") == 1
    assert "1 of 4 rows missing" in fig._suptitle.get_text()
    plt.close(fig)


def test_experiment_curve_has_a_panel_per_benchmark_and_lists_missing_rows():
    rows = WITH_MISSING + _rows(("seq-b", "sgd", 0))
    fig = experiment_accuracy_curve(_experiment_runs(), _accuracy_frame(), rows, "Table X")
    assert [ax.get_title().split(":")[0] for ax in fig.axes if ax.get_title()] == ["seq-a", "seq-b"]
    points = {line.get_label(): len(line.get_xdata()) for line in fig.axes[0].lines}
    assert points == {"sgd": T, "derpp (buf 200)": T, "er-h1a2b3c (buf 200)": T, "er_ace (buf 200) (missing)": 0}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "er_ace (buf 200) (missing)" in legend
    plt.close(fig)


@pytest.mark.parametrize("plot", [experiment_accuracy_curve, experiment_forgetting])
def test_experiment_figure_without_any_runs_says_so(plot):
    runs, accuracy = _experiment_runs(), _accuracy_frame()
    fig = plot(runs.iloc[:0], accuracy.iloc[:0], _rows(("seq-cifar10", "sgd", 0), ("seq-cifar10", "er", 200)), "T2")
    assert fig._suptitle.get_text() == "T2\n(no runs yet)"
    assert "no runs" in [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)


# ---- The BI-R blocks: SEM, one scenario's column, published markers, Fig. 8 bars, per-task bars.

def test_experiment_table_reports_sem_for_one_setting_and_marks_approximate_and_unpublished_values(tmp_path):
    from pathlib import Path

    runs = _runs_frame()
    runs = runs[(runs.run_name == "derpp") & (runs.benchmark == "seq-a")]
    runs = pd.concat([runs.assign(method=m, run_name=m) for m in ("bir", "bir_si_recon_rep")])
    write_table(runs.assign(benchmark="seq-cifar100-bir", buffer_size=0), RUNS_SCHEMA, tmp_path / "runs.parquet")
    asked = [dict(benchmark="seq-cifar100-bir", method=m, run_name=m, buffer_size=0, n_seeds_expected=3)
             for m in ("bir", "bir_si_recon_rep")]
    references = sorted((Path(__file__).resolve().parents[1] / "config/reference").glob("*.csv"))
    out = {ext: tmp_path / f"t.{ext}" for ext in ("md", "tex", "csv")}
    write_experiment_table(tmp_path / "runs.parquet", asked, "BI-R", out["md"], out["tex"], out["csv"],
                           reference_csv=references, settings=["class_il"], spread="sem")
    md = out["md"].read_text()
    # (60, 62, 67): std 3.6056, SEM 3.6056 / √3 = 2.0817; CVPR-W Table 2: BI-R 21.51 ± 0.25 (SEM)
    assert "| bir | 0 | 3 | 63.00 ± 2.08 [54.04, 71.96] | 21.51 ± 0.25 | +41.49 |" in md  # ± SEM = 3.61 / √3
    assert "| bir_si_recon_rep | 0 | 3 | 63.00 ± 2.08 [54.04, 71.96] | n/a | – |" in md
    assert "Task-IL" not in md and "mean ± SEM [95% confidence interval, Student's t] over seeds" in md


def test_published_values_read_off_a_plot_are_marked_approximate(tmp_path):
    from pathlib import Path

    runs = _runs_frame()
    runs = runs[(runs.run_name == "derpp") & (runs.benchmark == "seq-a")].assign(
        benchmark="seq-mnist", method="gr_er", run_name="gr_er-task", buffer_size=1000)
    write_table(runs, RUNS_SCHEMA, tmp_path / "runs.parquet")
    asked = [dict(benchmark="seq-mnist", method="gr_er", run_name="gr_er-task", buffer_size=1000, n_seeds_expected=3)]
    out = {ext: tmp_path / f"t.{ext}" for ext in ("md", "tex", "csv")}
    write_experiment_table(tmp_path / "runs.parquet", asked, "BI-R", out["md"], out["tex"], out["csv"],
                           reference_csv=Path(__file__).resolve().parents[1] / "config/reference/bir.csv",
                           settings=["task_il"], spread="std")
    # task-IL of (90, 91, 95): 92.00 ± 2.65; [CL]'s tutorial plot: ER >= 98
    assert "| gr_er-task | 1000 | 3 | 92.00 ± 2.65 [85.43, 98.57] | ≈98.00 | -6.00 |" in out["md"].read_text()


def test_ablation_bars_show_seed_dots_spread_and_chance(experiment_tables, tmp_path):
    from clcore.report.figures import experiment_ablation_bars

    runs = _experiment_runs()
    rows = _rows(("seq-a", "sgd", 0), ("seq-a", "derpp", 200), ("seq-a", "er_ace", 200))  # listed order kept
    fig = experiment_ablation_bars(runs, _accuracy_frame(), rows, "Fig. 8", setting="class_il", spread="sem",
                                   chance={"seq-a": 10.0})
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)][0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sgd", "derpp (buf 200)", "er_ace (buf 200) (missing)"]
    heights = [b.get_height() for b in bars.patches]
    assert heights[:2] == pytest.approx([31.0, 63.0]) and math.isnan(heights[2])
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert sorted(len(d.get_ydata()) for d in dots) == [0, 2, 3]  # one dot per seed
    chance = [line for line in ax.lines if line.get_label() == "chance"]
    assert chance and chance[0].get_ydata()[0] == 10.0
    plt.close(fig)


def test_final_task_accuracy_plots_each_task_after_the_last(experiment_tables, tmp_path):
    png, pdf = tmp_path / "x.png", tmp_path / "x.pdf"
    assert write_experiment_figure("final_task_accuracy", *experiment_tables, PRESENT, "MC", png, pdf,
                                   options={"setting": "task_il", "spread": "sem"}) == []
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_a_block_counts_a_shared_run_only_at_its_own_seeds(tmp_path):
    """derpp ran with seeds 0-2 for another block; a block asking for seed 0 only reports that seed."""
    runs = _runs_frame()
    write_table(runs[runs.benchmark == "seq-a"], RUNS_SCHEMA, tmp_path / "runs.parquet")
    asked = [dict(benchmark="seq-a", method="derpp", run_name="derpp", buffer_size=200, seeds=[0], n_seeds_expected=1)]
    out = {ext: tmp_path / f"t.{ext}" for ext in ("md", "tex", "csv")}
    table = write_experiment_table(tmp_path / "runs.parquet", asked, "T", out["md"], out["tex"], out["csv"])
    assert table.n_seeds.tolist() == [1] and table.class_il_faa_mean.tolist() == [60.0]
    assert "| derpp | 200 | 1 | 60.00 |" in out["md"].read_text()
