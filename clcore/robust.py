"""Robustness of a trained run: white-box L∞ attacks (FGSM, PGD) and the spurious-feature conflict test
(ser.md §4 "Adversarial protocol" and "Spurious-feature protocol"; both protocols are ours [OURS], the
paper's are unpublished), and the tables over seeds (ser.md §6).

Threat model: L∞ on pixels in [0, 1] (x01 = uint8 image / pixel_max), normalisation inside the model,
every network in eval mode, the model after the last task (`final.pt`, read by `train.load_trained`).
For SER methods the attack differentiates through both branches (`sal_grad: through`) or recomputes the
saliency encoder's taps on the perturbed image without differentiating them (`stop`, to expose gradient
masking). The attack loss is the summed cross-entropy on the class-IL logits (`attack_setting: class`;
after the last task every class is known) or on the task-masked logits (`task`). Predictions on the
adversarial images are scored class-IL (arg-max over all classes) and task-IL (arg-max over the classes
of the image's own task).

`robust_eval` writes one row per (attack, eps, sal_grad, setting) in `ROBUST_SCHEMA`; `images` says
which test images a row is measured on: `stratified` (the seeded `adv_n_per_class` subset, shared by
clean/FGSM/PGD rows) or `all` (the whole test set: clean and conflict rows).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F

from .collect import run_identity
from .errors import CLError
from .io import atomic_path, read_json
from .report.tables import MISSING, PAPER_SETTINGS, format_mean_std
from .results import SCHEMA_VERSION, SETTINGS, read_table, write_table

log = logging.getLogger("clcore.robust")

ATTACKS = ("clean", "fgsm", "pgd", "conflict")
SAL_GRADS = ("through", "stop")
NOT_APPLICABLE = "n/a"
ATTACK_SETTINGS = ("class", "task")
IMAGES = ("stratified", "all")
DEFAULT_EPS = (1 / 255, 2 / 255, 4 / 255)  # ser.md §4
PGD_STEPS = 10                             # ser.md §4: K = 10, α = 2.5 ε / K
ADV_N_PER_CLASS = {"paper": 10, "embedded": 20}  # ser.md §4 / §5

ROBUST_SCHEMA = pa.schema(
    [
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("run_name", pa.string(), nullable=False),
        pa.field("buffer_size", pa.int32(), nullable=False),
        pa.field("seed", pa.int32(), nullable=False),
        pa.field("attack", pa.string(), nullable=False),          # clean | fgsm | pgd | conflict
        pa.field("eps", pa.float64(), nullable=False),            # L∞ radius on [0,1] pixels; 0 for clean/conflict
        pa.field("sal_grad", pa.string(), nullable=False),        # through | stop (SER attacks) | n/a
        pa.field("attack_setting", pa.string(), nullable=False),  # class | task (loss the attack ascends) | n/a
        pa.field("images", pa.string(), nullable=False),          # stratified (attack subset) | all (test set)
        pa.field("setting", pa.string(), nullable=False),         # class_il | task_il
        pa.field("accuracy", pa.float64()),                       # %
        pa.field("n_images", pa.int32(), nullable=False),
    ],
    metadata={"schema_version": SCHEMA_VERSION},
)


# ---------------------------------------------------------------------------------------------- attacks

def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed CE: each image's input gradient is independent of the batch size."""
    return F.cross_entropy(logits, y, reduction="sum")


def task_masked_loss(class_task: torch.Tensor):
    """CE on the logits of each image's own task (`attack_setting: task`)."""

    def loss(logits, y):
        own = class_task[None, :] == class_task[y][:, None]
        return cross_entropy(logits.masked_fill(~own, torch.finfo(logits.dtype).min), y)

    return loss


def input_gradient(model_fn, x01: torch.Tensor, y: torch.Tensor, loss_fn=None) -> torch.Tensor:
    """∇ₓ loss_fn(model_fn(x), y) at x (no parameter gradient is accumulated)."""
    x = x01.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model_fn(x)
        if not logits.requires_grad:
            raise CLError("the model's logits do not depend differentiably on the input (a method whose "
                          "predict runs under no_grad, e.g. iCaRL's nearest-mean classifier): white-box "
                          "attacks need a differentiable classifier")
        loss = (loss_fn or cross_entropy)(logits, y)
        return torch.autograd.grad(loss, x)[0]


def fgsm(model_fn, x01: torch.Tensor, y: torch.Tensor, eps: float, loss_fn=None) -> torch.Tensor:
    """x' = clip(x + ε·sign ∇ₓL, 0, 1) (Goodfellow et al., 2015)."""
    if eps == 0:
        return x01.detach().clone()
    grad = input_gradient(model_fn, x01, y, loss_fn)
    return (x01.detach() + eps * grad.sign()).clamp(0, 1)


def pgd(model_fn, x01: torch.Tensor, y: torch.Tensor, eps: float, steps: int = PGD_STEPS,
        step_size: float | None = None, random_start: bool = True, generator: torch.Generator | None = None,
        loss_fn=None) -> torch.Tensor:
    """L∞ PGD (Madry et al., 2018): δ₀ ~ U[−ε, ε] (from `generator`), `steps` signed-gradient steps of
    `step_size` (default 2.5ε/steps), each followed by projection onto the ε-ball around x and onto
    [0, 1]. Returns the last iterate."""
    x = x01.detach()
    if eps == 0:
        return x.clone()
    alpha = 2.5 * eps / steps if step_size is None else step_size
    lower, upper = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = torch.min(torch.max(x + (2 * noise - 1) * eps, lower), upper)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        grad = input_gradient(model_fn, x_adv, y, loss_fn)
        x_adv = torch.min(torch.max(x_adv + alpha * grad.sign(), lower), upper)
    return x_adv


# ---------------------------------------------------------------------------------------------- images

def stratified_subset(y, n_per_class: int, seed: int = 0):
    """Sorted indices of `n_per_class` images of every class of y (all of a class's images if it has
    fewer), drawn with numpy's default_rng(seed). Same type as y's indices: a torch tensor on y's device
    for a tensor y, a numpy array otherwise."""
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        chosen.append(rng.choice(rows, size=min(n_per_class, len(rows)), replace=False))
    idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    idx = idx.astype(np.int64)
    return torch.from_numpy(idx).to(y.device) if isinstance(y, torch.Tensor) else idx


def conflict_images(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """`test_conflict` (ser.md §4): every image carries the signature of class (y + 1) mod C, pasted by
    the training-time rule (`scenarios.with_signatures`: side max(2, round(0.125·min(H, W))), top-left)."""
    from .scenarios import with_signatures

    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"class signatures are RGB patches: test_conflict needs [N,3,H,W] images, got {tuple(x.shape)}")
    return with_signatures(x, (y + 1) % n_classes, fraction=1.0)


# ---------------------------------------------------------------------------------------------- the model

def is_ser(method) -> bool:
    """A SER method: classifier modulated by a saliency encoder (`clcore.methods.ser.SERMixin`)."""
    return hasattr(method, "classify_with") and hasattr(method, "saliency")


def model_logits(method, sal_grad: str = "through"):
    """normalised x -> logits over all classes, differentiable w.r.t. x.

    SER: `classify_with` on the encoder taps Q = E(x), either differentiated (`through`) or recomputed
    on x without gradient (`stop`); both give the logits of `predict`. Other methods: `method.predict`."""
    if not is_ser(method):
        return method.predict
    if sal_grad not in SAL_GRADS:
        raise ValueError(f"sal_grad must be one of {', '.join(SAL_GRADS)}, not {sal_grad!r}")
    encoder = method.saliency.encoder  # S's decoder does not feed the classifier

    def logits(x):
        with torch.set_grad_enabled(sal_grad == "through" and torch.is_grad_enabled()):
            taps = encoder.forward_taps(x)[0]
        return method.classify_with(x, taps)

    return logits


def _normaliser(transform):
    mean, std = transform.mean[:, None, None], transform.std[:, None, None]
    return lambda x01: (x01 - mean) / std


def _correct(scores: torch.Tensor, y: torch.Tensor, class_task: torch.Tensor) -> dict[str, int]:
    """Correct class-IL (all classes) and task-IL (own task's classes) predictions."""
    own = class_task[None, :] == class_task[y][:, None]
    masked = scores.masked_fill(~own, float("-inf"))
    return {"class_il": int((scores.argmax(1) == y).sum()), "task_il": int((masked.argmax(1) == y).sum())}


def robust_eval(run_dir, prepared_dir="resources/prepared", device: str = "auto", eps=DEFAULT_EPS,
                n_per_class: int = ADV_N_PER_CLASS["embedded"], sal_grad=("through",), seed: int = 0,
                batch_size: int = 256, attack_setting: str = "class", pgd_steps: int = PGD_STEPS,
                conflict: bool | None = None) -> pd.DataFrame:
    """Rows of `ROBUST_SCHEMA` for the finished run in `run_dir` (which kept `final.pt`).

    - `stratified` rows, on `stratified_subset(test_y, n_per_class, seed)`: clean, and FGSM and PGD
      (`pgd_steps` steps, seeded random start) at each ε of `eps` for each `sal_grad` variant (SER
      methods; other methods get one variant, `n/a`); class-IL and task-IL on the same images.
    - `all` rows, on the whole test set: clean, and `conflict` (the signature of class (c+1) mod C on
      every image) when `conflict` is true, or, when it is None, when the benchmark trains with
      signatures (`spurious_fraction > 0`).
    `batch_size` bounds the images per attack step (at 288x384 two ResNet-18s need far fewer than at 32x32).
    """
    from .train import load_trained

    if attack_setting not in ATTACK_SETTINGS:
        raise ValueError(f"attack_setting must be one of {', '.join(ATTACK_SETTINGS)}, not {attack_setting!r}")
    bad = [g for g in sal_grad if g not in SAL_GRADS]
    if bad or not sal_grad:
        raise ValueError(f"sal_grad must be a non-empty subset of {', '.join(SAL_GRADS)}, not {sal_grad!r}")
    eps = tuple(float(e) for e in eps)
    if any(e < 0 for e in eps):
        raise ValueError(f"eps must be >= 0, got {eps}")
    run_dir = Path(run_dir)
    info = read_json(run_dir / "run.json")
    method, scenario = load_trained(run_dir, prepared_dir, device)
    method.eval()
    dev, class_task, n_classes = scenario.device, scenario.class_task, scenario.n_classes
    norm, pixel_max = _normaliser(scenario.transform), scenario.transform.pixel_max
    variants = tuple(dict.fromkeys(sal_grad)) if is_ser(method) else (NOT_APPLICABLE,)
    loss_fn = cross_entropy if attack_setting == "class" else task_masked_loss(class_task)
    if conflict is None:
        conflict = scenario.spec.spurious_fraction > 0

    counts: dict[tuple, dict[str, int]] = {}
    totals: dict[tuple, int] = {}

    def add(key, scores, y):
        c = _correct(scores, y, class_task)
        old = counts.setdefault(key, {s: 0 for s in SETTINGS})
        for s in SETTINGS:
            old[s] += c[s]
        totals[key] = totals.get(key, 0) + len(y)

    def predict01(x01):
        with torch.no_grad():
            return method.predict(norm(x01))

    # --- the attack subset
    idx = stratified_subset(scenario.test_y, n_per_class, seed)
    x_sub, y_sub = scenario.test_x[idx], scenario.test_y[idx]
    generators = {(g, e): torch.Generator(device=dev).manual_seed(seed) for g in variants for e in eps}
    model_fns = {g: (lambda x01, f=model_logits(method, g if g != NOT_APPLICABLE else "through"): f(norm(x01)))
                 for g in variants}
    for start in range(0, len(y_sub), batch_size):
        x01 = x_sub[start:start + batch_size].float() / pixel_max
        y = y_sub[start:start + batch_size]
        add(("clean", 0.0, NOT_APPLICABLE, NOT_APPLICABLE, "stratified"), predict01(x01), y)
        for g in variants:
            for e in eps:
                x_fgsm = fgsm(model_fns[g], x01, y, e, loss_fn)
                add(("fgsm", e, g, attack_setting, "stratified"), predict01(x_fgsm), y)
                x_pgd = pgd(model_fns[g], x01, y, e, steps=pgd_steps, generator=generators[g, e], loss_fn=loss_fn)
                add(("pgd", e, g, attack_setting, "stratified"), predict01(x_pgd), y)
    log.info("%s: attacks on %d images (%d per class), eps %s, sal_grad %s", run_dir, len(y_sub), n_per_class,
             eps, variants)

    # --- the whole test set: clean and conflict
    for start in range(0, scenario.test_x.shape[0], batch_size):
        x, y = scenario.test_x[start:start + batch_size], scenario.test_y[start:start + batch_size]
        add(("clean", 0.0, NOT_APPLICABLE, NOT_APPLICABLE, "all"), predict01(x.float() / pixel_max), y)
        if conflict:
            x_conflict = conflict_images(x, y, n_classes)
            add(("conflict", 0.0, NOT_APPLICABLE, NOT_APPLICABLE, "all"), predict01(x_conflict.float() / pixel_max), y)

    ident = run_identity(info)
    rows = []
    for (attack, e, g, a_set, images), correct in counts.items():
        for s in SETTINGS:
            rows.append({**ident, "attack": attack, "eps": e, "sal_grad": g, "attack_setting": a_set,
                         "images": images, "setting": s, "accuracy": 100.0 * correct[s] / totals[attack, e, g, a_set, images],
                         "n_images": totals[attack, e, g, a_set, images]})
    df = pd.DataFrame(rows, columns=ROBUST_SCHEMA.names)
    for _, r in df[df.setting == "class_il"].iterrows():
        log.info("%-8s eps %.4f %-7s %-10s class-IL %.2f", r.attack, r.eps, r.sal_grad, r.images, r.accuracy)
    return df


def write_robust_eval(run_dir, out_parquet, **kwargs) -> pd.DataFrame:
    """`robust_eval` written atomically to `out_parquet` with `ROBUST_SCHEMA` (schema_version metadata)."""
    df = robust_eval(run_dir, **kwargs)
    write_table(df, ROBUST_SCHEMA, out_parquet)
    return df


def load_robust(paths) -> pd.DataFrame:
    """The rows of several robust_eval parquet files (schema version checked)."""
    frames = [read_table(p, ROBUST_SCHEMA) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ROBUST_SCHEMA.names)


# ---------------------------------------------------------------------------------------------- tables

RUN_KEYS = ["benchmark", "method", "run_name", "buffer_size"]
SPURIOUS_SUFFIX = "-spurious"
SER_SUFFIX = "_ser"
RECOVERY_MEASURES = {"clean_all": "clean test set", "conflict": "test_conflict"}
PROTOCOL_NOTE = ("Protocols are ours [OURS] (ser.md §4; the paper's attack settings and signature are unpublished): "
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
    """One row per (run, attack variant, setting, column): n_seeds, mean and std (ddof 1) over seeds.

    A run's clean/conflict cells (which no attack variant changes) are repeated on each of its attack
    variants (SER: `through`, `stop`), so every table row is complete."""
    cols = RUN_KEYS + ["variant", "setting", "column", "n_seeds", "mean", "std"]
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
    grouped = df.groupby(RUN_KEYS + ["variant", "setting", "column"], sort=False)["accuracy"]
    out = pd.DataFrame({"n_seeds": grouped.size(), "mean": grouped.mean(), "std": grouped.std(ddof=1)}).reset_index()
    return out[cols]


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
    """Spurious-feature recovery (ser.md §6) = (SER_SF − BASE_SF) / (BASE_clean − BASE_SF).

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
             "Accuracy (%), mean ± std over seeds; – = no result; grad = how the attack treats SER's saliency "
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
                        out.append(format_mean_std(cell["mean"], cell["std"]))
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
