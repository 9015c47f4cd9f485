"""Robustness of a trained run: white-box L∞ attacks (FGSM, PGD) and the spurious-feature conflict test
(docs/ser.md#robustness-studies; both protocols are ours [OURS], the paper's are unpublished); the tables
over seeds are clcore/report/robustness.py.

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
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ...collect import run_identity
from ...errors import CLError
from ...io import read_json
from ...results import ROBUST_SCHEMA, SETTINGS, write_table

log = logging.getLogger("clcore.robust")

ATTACKS = ("clean", "fgsm", "pgd", "conflict")
SAL_GRADS = ("through", "stop")
NOT_APPLICABLE = "n/a"
ATTACK_SETTINGS = ("class", "task")
IMAGES = ("stratified", "all")
DEFAULT_EPS = (1 / 255, 2 / 255, 4 / 255)  # docs/ser.md#fgsm-and-pgd
PGD_STEPS = 10                             # K = 10, α = 2.5 ε / K (docs/ser.md#fgsm-and-pgd)
ADV_N_PER_CLASS = {"paper": 10, "embedded": 20}  # docs/ser.md#options

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
    """`test_conflict` (docs/ser.md#conflict-test): every image carries the signature of class (y + 1) mod C, pasted by
    the training-time rule (`scenarios.with_signatures`: side max(2, round(0.125·min(H, W))), top-left)."""
    from ...scenarios import with_signatures

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
    from ...train import load_trained

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
