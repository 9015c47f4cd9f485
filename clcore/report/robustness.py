"""SER's robustness tables (docs/ser.md#robustness-studies): clean, FGSM and PGD accuracy per eps and
SER gradient variant, conflict accuracy, and the spurious-feature recovery of a SER method over its base,
from the rows `clcore.methods.ser.write_robust_eval` writes (`ROBUST_SCHEMA`)."""

from __future__ import annotations

import math

import pandas as pd

from ..io import atomic_path
from ..methods.ser import NOT_APPLICABLE, PGD_STEPS, SAL_GRADS
from ..results import ROBUST_SCHEMA, SETTINGS, read_table
from .stats import seed_stats
from .tables import MISSING, PAPER_SETTINGS, format_mean_std


def load_robust(paths) -> pd.DataFrame:
    """The rows of several robust_eval parquet files (schema version checked)."""
    frames = [read_table(p, ROBUST_SCHEMA) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ROBUST_SCHEMA.names)


RUN_KEYS = ["benchmark", "method", "run_name", "buffer_size"]
SPURIOUS_SUFFIX = "-spurious"
SER_SUFFIX = "_ser"
RECOVERY_MEASURES = {"clean_all": "clean test set", "conflict": "test_conflict"}
PROTOCOL_NOTE = ("Protocols are ours [OURS] (docs/ser.md#robustness-studies; the paper's attack settings and "
                 "signature are unpublished): "
                 "L∞ white-box attacks on [0,1] pixels with normalisation inside the model, both networks in eval "
                 "mode, the model after the last task; FGSM, and PGD with {steps} steps of 2.5ε/{steps} from a "
                 "uniform random start; the attack loss is the class-IL cross-entropy; task-IL = arg-max over the "
                 "image's task on the same adversarial images. Clean/FGSM/PGD are measured on a seeded stratified "
                 "test subset; \"clean (all)\" and \"conflict\" (the signature of class (c+1) mod C pasted on every "
                 "test image) on the whole test set.")


def eps_label(eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"


def _column(attack: str, eps: float, images: str) -> str:
    if attack in ("fgsm", "pgd"):
        return f"{attack}@{eps_label(eps)}"
    if attack == "clean":
        return "clean" if images == "stratified" else "clean_all"
    return attack


def _column_title(col: str) -> str:
    if "@" in col:
        attack, eps = col.split("@")
        return f"{attack.upper()} ε={eps}"
    return {"clean": "clean", "clean_all": "clean (all)", "conflict": "conflict"}[col]


def _variant(sal_grad: str, attack_setting: str) -> str:
    return sal_grad if attack_setting in ("class", NOT_APPLICABLE) else f"{sal_grad}, task loss"


def robustness_cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, attack variant, setting, column): n_seeds, mean, std (ddof 1) and the 95 % t interval
    over seeds (clcore.report.stats).

    A run's clean/conflict cells (which no attack variant changes) are repeated on each of its attack
    variants (SER: `through`, `stop`), so every table row is complete."""
    cols = RUN_KEYS + ["variant", "setting", "column", "n_seeds", "mean", "std", "ci_low", "ci_high"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(column=[_column(a, e, i) for a, e, i in zip(df.attack, df.eps, df.images)],
                   variant=[_variant(g, s) for g, s in zip(df.sal_grad, df.attack_setting)])
    attacked = df.attack.isin(["fgsm", "pgd"])
    variants = df[attacked].groupby(RUN_KEYS)["variant"].unique().to_dict()
    shared = df[~attacked]
    expanded = [df[attacked]]
    for key, rows in shared.groupby(RUN_KEYS):
        for v in variants.get(key, [NOT_APPLICABLE]):
            expanded.append(rows.assign(variant=v))
    df = pd.concat(expanded, ignore_index=True)
    rows = []
    for key, accuracy in df.groupby(RUN_KEYS + ["variant", "setting", "column"], sort=False)["accuracy"]:
        st = seed_stats(accuracy)
        rows.append([*key, len(accuracy), st.mean, st.std, st.ci_low, st.ci_high])
    return pd.DataFrame(rows, columns=cols)


def _column_order(columns) -> list[str]:
    def key(col):
        if "@" in col:
            attack, eps = col.split("@")
            num, _, den = eps.partition("/")
            value = float(num) / float(den) if den else float(num)
            return (1 if attack == "fgsm" else 2, value)
        return {"clean": (0, 0), "clean_all": (3, 0), "conflict": (4, 0)}[col]

    return sorted(set(columns), key=key)


def recovery(cells: pd.DataFrame) -> pd.DataFrame:
    """Spurious-feature recovery (docs/ser.md#recovery) = (SER_SF − BASE_SF) / (BASE_clean − BASE_SF).

    Pairing [OURS]: for every benchmark B_SF named `<B>-spurious` and every buffer size, BASE_clean is the
    base method (e.g. `er_ace`) trained on B, BASE_SF the same method trained on B_SF and SER_SF its SER
    variant (`<base>_ser`, e.g. `er_ace_ser`) trained on B_SF; each term is the mean over seeds (seeds are
    not paired across runs) of the accuracy on the whole clean test set (column `clean (all)`) or on
    `test_conflict` (column `conflict`), class-IL and task-IL. A pair is computed only when all three
    means exist and each (benchmark, method, buffer) has a single run_name; the ratio is NaN (shown "–")
    when BASE_clean == BASE_SF."""
    cols = ["benchmark_clean", "benchmark_spurious", "base", "ser", "buffer_size", "setting", "measure",
            "base_clean", "base_sf", "ser_sf", "recovery"]
    rows = []
    shared = cells[cells.column.isin(list(RECOVERY_MEASURES))].drop_duplicates(
        RUN_KEYS + ["setting", "column"])  # the same value on every attack variant
    names = shared.groupby(["benchmark", "method", "buffer_size"])["run_name"].nunique()
    means = shared.set_index(["benchmark", "method", "buffer_size", "setting", "column"])["mean"]
    for (bench_sf, ser, buf) in names.index:
        if not bench_sf.endswith(SPURIOUS_SUFFIX) or not ser.endswith(SER_SUFFIX):
            continue
        bench, base = bench_sf[: -len(SPURIOUS_SUFFIX)], ser[: -len(SER_SUFFIX)]
        trio = [(bench, base), (bench_sf, base), (bench_sf, ser)]
        if any(names.get((b, m, buf), 0) != 1 for b, m in trio):
            continue
        for setting in SETTINGS:
            for measure in RECOVERY_MEASURES:
                vals = [means.get((b, m, buf, setting, measure), float("nan")) for b, m in trio]
                clean, sf, ser_sf = (float(v) for v in vals)
                den = clean - sf
                value = (ser_sf - sf) / den if not any(map(math.isnan, vals)) and abs(den) > 1e-12 else float("nan")
                rows.append(dict(benchmark_clean=bench, benchmark_spurious=bench_sf, base=base, ser=ser,
                                 buffer_size=buf, setting=setting, measure=measure, base_clean=clean, base_sf=sf,
                                 ser_sf=ser_sf, recovery=value))
    return pd.DataFrame(rows, columns=cols)


def robustness_markdown(cells: pd.DataFrame, runs: pd.DataFrame, columns: list[str], rec: pd.DataFrame,
                        title: str, steps: int = PGD_STEPS) -> str:
    lines = [f"# {title}", "", PROTOCOL_NOTE.format(steps=steps), "",
             "Accuracy (%), mean ± std [95% confidence interval, Student's t] over seeds; – = no result; grad = how "
             "the attack treats SER's saliency "
             "branch (through: differentiated, stop: recomputed on the perturbed image, not differentiated; "
             "n/a: no saliency branch).", ""]
    header = ["method", "buffer", "seeds", "grad", *map(_column_title, columns)]
    index = cells.set_index(RUN_KEYS + ["variant", "setting", "column"])
    for benchmark, bench_runs in runs.groupby("benchmark", sort=False):
        lines += [f"## {benchmark}", ""]
        for setting, label in PAPER_SETTINGS.items():
            lines += [f"### {label}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for r in bench_runs.itertuples(index=False):
                key = (r.benchmark, r.method, r.run_name, r.buffer_size, r.variant, setting)
                out = [r.run_name, str(r.buffer_size), r.seeds, r.variant]
                for col in columns:
                    if key + (col,) in index.index:
                        cell = index.loc[key + (col,)]
                        out.append(format_mean_std(cell["mean"], cell["std"], ci=(cell["ci_low"], cell["ci_high"])))
                    else:
                        out.append(MISSING)
                lines.append("| " + " | ".join(out) + " |")
            lines.append("")
    if len(rec):
        lines += ["## Spurious-feature recovery [OURS]", "",
                  "recovery = (SER_SF − BASE_SF) / (BASE_clean − BASE_SF): BASE_clean = the base method trained "
                  "on the clean benchmark, BASE_SF = the base method and SER_SF = its SER variant trained on the "
                  "`-spurious` benchmark, same buffer; each a mean over seeds of the accuracy on the whole clean "
                  "test set or on test_conflict. 1 = SER recovers all accuracy lost to the signature.", "",
                  "| base | SER | buffer | setting | measured on | BASE_clean | BASE_SF | SER_SF | recovery |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rec.itertuples(index=False):
            values = [format_mean_std(v, None) for v in (r.base_clean, r.base_sf, r.ser_sf, r.recovery)]
            lines.append("| " + " | ".join([f"{r.base} ({r.benchmark_clean})", f"{r.ser} ({r.benchmark_spurious})",
                                            str(r.buffer_size), PAPER_SETTINGS[r.setting],
                                            RECOVERY_MEASURES[r.measure], *values]) + " |")
        lines.append("")
    return "\n".join(lines)


def robustness_table(parquet_files, out_md, out_csv, title: str, expected=None, eps=None,
                     steps: int = PGD_STEPS) -> pd.DataFrame:
    """robust_eval parquet files -> one Markdown table per benchmark and setting (rows: method, buffer,
    attack variant; columns: clean, FGSM and PGD at each ε, clean on the whole test set, conflict) and
    a long CSV, written atomically.

    `expected` (records or DataFrame with benchmark, method, run_name, buffer_size and optionally
    n_seeds_expected) adds the runs the experiment asks for: one without results shows "–" in every
    cell. `eps` adds FGSM/PGD columns for these radii even where no run has them. The CSV has one row
    per cell (kind `cell`: run keys, variant, setting, column, n_seeds, mean, std) and per recovery
    value (kind `recovery`, see `recovery`)."""
    df = load_robust(parquet_files)
    cells = robustness_cells(df)
    columns = list(cells.column)
    for e in eps or ():
        columns += [f"fgsm@{eps_label(float(e))}", f"pgd@{eps_label(float(e))}"]
    columns = _column_order(columns or ["clean"])

    runs = cells[RUN_KEYS + ["variant", "n_seeds"]].groupby(RUN_KEYS + ["variant"], sort=False)["n_seeds"].max()
    runs = runs.rename("n_seeds").reset_index()
    expected = pd.DataFrame(expected) if expected is not None else pd.DataFrame()
    if not expected.empty:
        expected = expected.astype({"buffer_size": int})
        have = set(map(tuple, runs[RUN_KEYS].astype({"buffer_size": int}).itertuples(index=False)))
        extra = [r for r in expected[RUN_KEYS].itertuples(index=False) if tuple(r) not in have]
        runs = pd.concat([runs, pd.DataFrame([{**r._asdict(), "variant": NOT_APPLICABLE, "n_seeds": 0}
                                              for r in extra], columns=runs.columns)], ignore_index=True)
        if "n_seeds_expected" in expected:
            runs = runs.merge(expected[RUN_KEYS + ["n_seeds_expected"]].drop_duplicates(RUN_KEYS), on=RUN_KEYS,
                              how="left")
    if "n_seeds_expected" not in runs:
        runs["n_seeds_expected"] = pd.NA
    runs["n_seeds"] = runs.n_seeds.fillna(0).astype(int)
    runs["seeds"] = [f"{n}/{int(x)}" if not pd.isna(x) and 0 < n < int(x) else str(n)
                     for n, x in zip(runs.n_seeds, runs.n_seeds_expected)]
    rank = {v: i for i, v in enumerate((*SAL_GRADS, NOT_APPLICABLE))}  # through before stop
    runs = runs.assign(_rank=[rank.get(v.split(",")[0], len(rank)) for v in runs.variant])
    runs = runs.sort_values(["benchmark", "buffer_size", "run_name", "_rank", "variant"], kind="stable")
    runs = runs.drop(columns="_rank").reset_index(drop=True)
    rec = recovery(cells)

    with atomic_path(out_md) as tmp:
        tmp.write_text(robustness_markdown(cells, runs, columns, rec, title, steps), encoding="utf-8")

    long = cells.assign(kind="cell")
    missing = []  # expected runs without results: explicit empty cells, never zeros
    for r in runs[runs.n_seeds == 0].itertuples(index=False):
        for setting in SETTINGS:
            for col in columns:
                missing.append({**{k: getattr(r, k) for k in RUN_KEYS}, "variant": r.variant, "setting": setting,
                                "column": col, "n_seeds": 0, "mean": float("nan"), "std": float("nan"),
                                "kind": "cell"})
    rec_rows = rec.assign(kind="recovery", benchmark=rec.benchmark_spurious, method=rec.ser, run_name=rec.ser,
                          variant=NOT_APPLICABLE, column="recovery_" + rec.measure, n_seeds=pd.NA,
                          mean=rec.recovery, std=float("nan"))
    csv_cols = ["kind", *RUN_KEYS, "variant", "setting", "column", "n_seeds", "mean", "std",
                "base_clean", "base_sf", "ser_sf"]
    table = pd.concat([f for f in (long, pd.DataFrame(missing), rec_rows) if len(f)], ignore_index=True)
    table = table.reindex(columns=csv_cols)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table
