"""Robustness evaluation: the adversarial and spurious-feature protocols (docs/ser.md#robustness-studies)
and the attack tests of docs/ser.md#unit-checks."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from clcore.augment import Transform
from clcore.data.shapes import signature_patch
from clcore.hparams import make_hparams, resolve
from clcore.methods import get_method
from clcore.methods.base import Context
from clcore.methods.ser.attacks import (conflict_images, fgsm, model_logits, pgd, robust_eval, stratified_subset,
                                        write_robust_eval)
from clcore.report.robustness import load_robust, recovery, robustness_cells, robustness_table
from clcore.results import ROBUST_SCHEMA
from clcore.train import run_training


def linear_model(d=12, c=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(c, d, generator=g, dtype=dtype), torch.randn(c, generator=g, dtype=dtype)
    return (lambda x: x.flatten(1) @ w.T + b), w, b


def mlp_model(d=12, c=4, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 16), torch.nn.ReLU(), torch.nn.Linear(16, c))
    return net.double().eval()


def images(n=32, shape=(1, 3, 4), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g, dtype=dtype)
    x[0] = 0.0  # pixels at the box boundaries
    x[1] = 1.0
    return x, torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("eps", [0.0, 1 / 255, 4 / 255, 0.3])
def test_attacks_stay_in_ball_and_box(eps):
    model = mlp_model()
    x, y = images()
    model32 = mlp_model().float()  # float32 as in robust_eval: rounding must stay within 1e-7
    for x_adv in (fgsm(model, x, y, eps),
                  pgd(model, x, y, eps, generator=torch.Generator().manual_seed(0)),
                  fgsm(model32, x.float(), y, eps),
                  pgd(model32, x.float(), y, eps, generator=torch.Generator().manual_seed(0))):
        assert x_adv.shape == x.shape
        assert float((x_adv.double() - x.to(x_adv.dtype).double()).abs().max()) <= eps + 1e-7
        assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_eps_zero_reproduces_clean():
    model = mlp_model()
    x, y = images()
    clean = (model(x).argmax(1) == y).float().mean()
    for x_adv in (fgsm(model, x, y, 0.0), pgd(model, x, y, 0.0, generator=torch.Generator().manual_seed(0))):
        assert torch.equal(x_adv, x)
        assert (model(x_adv).argmax(1) == y).float().mean() == clean


def test_pgd_one_step_without_random_start_equals_fgsm():
    model = mlp_model()
    x, y = images()
    for eps in (1 / 255, 8 / 255):
        assert torch.equal(pgd(model, x, y, eps, steps=1, step_size=eps, random_start=False), fgsm(model, x, y, eps))


def test_pgd_is_seeded_and_ascends():
    model = mlp_model()
    x, y = images()
    a = pgd(model, x, y, 4 / 255, generator=torch.Generator().manual_seed(3))
    b = pgd(model, x, y, 4 / 255, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # PGD increases the loss at least as much as FGSM on this smooth model (10 steps of 2.5ε/10)
    loss = lambda z: F.cross_entropy(model(z), y, reduction="sum")
    assert loss(a) >= loss(x)


def test_fgsm_matches_closed_form_on_linear_model():
    model, w, b = linear_model()
    x, y = images()
    eps = 0.05
    p = torch.softmax(x.flatten(1) @ w.T + b, dim=1)
    grad = ((p - F.one_hot(y, 4).double()) @ w).reshape(x.shape)  # ∂ CE / ∂x by hand
    expected = (x + eps * grad.sign()).clamp(0, 1)
    assert torch.equal(fgsm(model, x, y, eps), expected)


def test_task_loss_only_sees_own_task():
    from clcore.methods.ser.attacks import task_masked_loss

    model, w, b = linear_model()
    x, y = images()
    class_task = torch.tensor([0, 0, 1, 1])
    logits = x.flatten(1) @ w.T + b
    own = class_task[None] == class_task[y][:, None]
    p = torch.softmax(logits.masked_fill(~own, float("-inf")), dim=1)
    g = ((p - F.one_hot(y, 4).double()) @ w).reshape(x.shape)
    assert torch.equal(fgsm(model, x, y, 0.05, loss_fn=task_masked_loss(class_task)), (x + 0.05 * g.sign()).clamp(0, 1))


def test_stratified_subset():
    y = torch.tensor([0] * 30 + [1] * 25 + [2] * 5 + [3] * 40)[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    idx = stratified_subset(y, 10, seed=0)
    assert idx.dtype == torch.int64 and torch.equal(idx, idx.sort().values) and len(idx.unique()) == len(idx)
    counts = torch.bincount(y[idx], minlength=4).tolist()
    assert counts == [10, 10, 5, 10]  # a class with fewer images contributes all of them
    assert torch.equal(idx, stratified_subset(y, 10, seed=0))
    assert not torch.equal(idx, stratified_subset(y, 10, seed=1))
    assert np.array_equal(stratified_subset(y.numpy(), 10, seed=0), idx.numpy())


@pytest.mark.parametrize("hw,size", [((32, 32), 4), ((12, 12), 2), ((288, 384), 36)])
def test_conflict_pastes_next_class_signature(hw, size):
    n_classes = 10
    y = torch.tensor([0, 3, 9])
    x = torch.full((3, 3, *hw), 7, dtype=torch.uint8)
    out = conflict_images(x, y, n_classes)
    expected = torch.from_numpy(signature_patch(((y + 1) % n_classes).numpy(), size))
    assert torch.equal(out[:, :, :size, :size], expected)
    rest = out.clone()
    rest[:, :, :size, :size] = 7
    assert torch.equal(rest, x) and torch.equal(x, torch.full_like(x, 7))  # input untouched
    assert not torch.equal(out[:, :, :size, :size], torch.from_numpy(signature_patch(y.numpy(), size)))
    with pytest.raises(ValueError, match="RGB"):
        conflict_images(x[:, :1], y, n_classes)


def _tiny_ser(tmp_path):
    from clcore.backbones import build_backbone
    from clcore.methods.ser.saliency import SaliencyPredictor, save_predictor

    torch.manual_seed(0)
    shape = (3, 16, 16)
    save_predictor(tmp_path / "sal.pt", SaliencyPredictor(shape, nf=4, widths=(8, 8, 4)))
    transform = Transform(1.0, torch.full((3,), 0.5), torch.full((3,), 0.25))
    ctx = Context(n_classes=4, task_classes=[(0, 1), (2, 3)], transform=transform, device=torch.device("cpu"),
                  seed=0, buffer_size=10, make_net=lambda: build_backbone("resnet18", shape, 4, nf=4),
                  artefacts={"saliency_predictor": tmp_path / "sal.pt"})
    cls, defaults = get_method("er_ace_ser")
    method = cls(ctx.make_net(), make_hparams("er_ace_ser", defaults), ctx)
    for m in method.modules():  # non-trivial BN statistics so that eval-mode taps are not ~0
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return method.eval()


def test_ser_attack_forward_matches_predict_and_sal_grad_differs(tmp_path):
    method = _tiny_ser(tmp_path)
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        reference = method.predict(x)
    grads = {}
    for mode in ("through", "stop"):
        fn = model_logits(method, mode)
        with torch.no_grad():
            torch.testing.assert_close(fn(x), reference, atol=1e-6, rtol=1e-5)
        xg = x.clone().requires_grad_(True)
        grads[mode] = torch.autograd.grad(F.cross_entropy(fn(xg), y, reduction="sum"), xg)[0]
    assert not torch.allclose(grads["through"], grads["stop"])  # the encoder's gradient is included
    assert all(p.grad is None for p in method.parameters())  # attacks leave no parameter gradients
    for mode in ("through", "stop"):
        x_adv = pgd(model_logits(method, mode), x, y, 4 / 255, steps=2, generator=torch.Generator().manual_seed(0))
        assert float((x_adv - x).abs().max()) <= 4 / 255 + 1e-7
    assert method.saliency.training is False and method.net.training is False


def test_recovery_pairing():
    cells = {("b", "er_ace", "clean", "all", "class_il"): [80, 82],
             ("b-spurious", "er_ace", "clean", "all", "class_il"): [40, 40],
             ("b-spurious", "er_ace_ser", "clean", "all", "class_il"): [60, 62],
             ("b-spurious", "er_ace", "conflict", "all", "class_il"): [10, 10],
             ("b-spurious", "er_ace_ser", "conflict", "all", "class_il"): [30, 30]}
    rec = recovery(robustness_cells(_frame_from(cells)))
    row = rec[(rec.setting == "class_il") & (rec.measure == "clean_all")].iloc[0]
    assert (row.base, row.ser, row.benchmark_clean) == ("er_ace", "er_ace_ser", "b")
    assert row.recovery == pytest.approx((61 - 40) / (81 - 40))
    missing = rec[(rec.setting == "class_il") & (rec.measure == "conflict")].iloc[0]
    assert np.isnan(missing.recovery)  # the clean-trained run has no conflict rows


def _frame_from(cells):
    """Synthetic robust_eval rows: cells[(benchmark, method, attack, images, setting)] = accuracy per seed."""
    rows = []
    for (bench, method, attack, images, setting), values in cells.items():
        for seed, acc in enumerate(values):
            rows.append(dict(benchmark=bench, method=method, run_name=method, buffer_size=100, seed=seed,
                             attack=attack, eps=0.0, sal_grad="n/a", attack_setting="n/a", images=images,
                             setting=setting, accuracy=float(acc), n_images=100))
    return pd.DataFrame(rows, columns=ROBUST_SCHEMA.names)


def test_end_to_end_on_seq_digits(prepared_dir, tmp_path, monkeypatch):
    import clcore.methods.ser.attacks as attacks

    # digits are grey: stand in for the RGB signature with a grey 2x2 square coding class (c+1) mod C,
    # to run the conflict path end to end (conflict_images itself is tested above)
    def grey_conflict(x, y, n_classes):
        x = x.clone()
        x[:, :, :2, :2] = ((y + 1) % n_classes).to(x.dtype)[:, None, None, None]
        return x

    monkeypatch.setattr(attacks, "conflict_images", grey_conflict)
    hp = resolve("er", "seq-digits", 50, {"n_epochs": 1})
    run = tmp_path / "runs/seq-digits/er/buf50/seed0"
    run_training("seq-digits", "er", 50, 0, hp, prepared_dir, run, run_name="er", device="cpu", keep_final=True)
    eps = (0.0, 1 / 255, 2 / 255, 4 / 255, 16 / 255)
    out = tmp_path / "robust.parquet"
    df = write_robust_eval(run, out, prepared_dir=prepared_dir, device="cpu", eps=eps, n_per_class=20,
                           sal_grad=("through", "stop"), seed=0, batch_size=64, conflict=True)
    table = pq.read_table(out)
    assert table.schema.equals(ROBUST_SCHEMA, check_metadata=False)
    assert table.schema.metadata[b"schema_version"] == b"1"
    assert len(load_robust([out])) == len(df)

    sub = df[df.images == "stratified"]
    assert set(sub.n_images) == {200}  # 20 per class, 10 classes
    assert set(sub.sal_grad) == {"n/a"}  # er has no saliency branch: one attack variant
    for setting in ("class_il", "task_il"):
        clean = sub[(sub.attack == "clean") & (sub.setting == setting)].accuracy
        assert len(clean) == 1
        acc = {}
        for attack in ("fgsm", "pgd"):
            rows = sub[(sub.attack == attack) & (sub.setting == setting)].set_index("eps").accuracy
            assert sorted(rows.index) == sorted(eps)
            acc[attack] = rows.sort_index().to_numpy()
            assert acc[attack][0] == pytest.approx(float(clean.iloc[0]))  # eps 0 = clean
            assert np.all(np.diff(acc[attack]) <= 1e-9)  # non-increasing in eps
        assert np.all(acc["pgd"] <= acc["fgsm"] + 1.0)
    strongest = sub[(sub.attack == "pgd") & (sub.eps == eps[-1]) & (sub.setting == "class_il")].accuracy.iloc[0]
    assert strongest < float(sub[(sub.attack == "clean") & (sub.setting == "class_il")].accuracy.iloc[0])
    full = df[df.images == "all"]
    assert set(full.attack) == {"clean", "conflict"} and full.n_images.nunique() == 1
    task = df[df.setting == "task_il"].set_index(["attack", "eps", "images"]).accuracy
    klass = df[df.setting == "class_il"].set_index(["attack", "eps", "images"]).accuracy
    assert np.all(task.loc[klass.index] >= klass - 1e-9)  # masking the other tasks can only help

    # default: seq-digits trains without signatures, so no conflict rows
    again = robust_eval(run, prepared_dir, "cpu", eps=(1 / 255,), n_per_class=5, batch_size=64)
    assert "conflict" not in set(again.attack)

    md, csv = tmp_path / "robust.md", tmp_path / "robust.csv"
    expected = [dict(benchmark="seq-digits", method="er", run_name="er", buffer_size=50, n_seeds_expected=3),
                dict(benchmark="seq-digits", method="der", run_name="der", buffer_size=50, n_seeds_expected=3)]
    robustness_table([out], md, csv, "Robustness (test)", expected=expected, eps=eps[1:])
    text = md.read_text()
    assert "[OURS]" in text and "# Robustness (test)" in text
    der_lines = [line for line in text.splitlines() if line.startswith("| der |")]
    assert len(der_lines) == 2 and all(line.count("–") >= 9 for line in der_lines)  # missing run: every cell "–"
    er_line = next(line for line in text.splitlines() if line.startswith("| er |"))
    assert "1/3" in er_line and "PGD ε=4/255" in text and "FGSM ε=16/255" in text
    long = pd.read_csv(csv)
    assert long[(long.run_name == "der")]["mean"].isna().all() and (long[long.run_name == "der"].n_seeds == 0).all()
    assert long[(long.run_name == "er") & (long.column == "pgd@4/255")]["mean"].notna().all()
