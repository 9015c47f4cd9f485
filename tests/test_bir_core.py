"""BI-R core (docs/bir.md#tested-invariants): hand-computed losses, gates, frozen conv, replay, 1/t weighting,
optimiser state, resume."""

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chisquare

from clcore.augment import Transform
from clcore.methods.bir.vae import ConvE
from clcore.hparams import make_hparams, resolve
from clcore.methods import get_method
from clcore.methods.base import Context
from clcore.methods.bir.generative_replay import VAEPass, kd_loss, kl_standard, log_mixture, log_normal, mix, si_accumulate
from clcore.methods.baselines import SIImportance
from clcore.results import load_metrics
from clcore.scenarios import Task
from clcore.train import run_training
from helpers import killed_at_task

LN4, LN2 = math.log(4.0), math.log(2.0)
TINY = dict(iters=5, batch_size=8, fc_units=16, z_dim=4, lr=1e-3)


def build(method, shape=(1, 8, 8), n_tasks=2, per_task=2, seed=0, artefacts=None, **overrides):
    """A method on a synthetic context (CPU), with its hyperparameters resolved as a run would."""
    cls, defaults = get_method(method)
    values = {**TINY, **defaults, **overrides}
    hp = make_hparams(method, {k: v for k, v in values.items()})
    c = shape[0]
    ctx = Context(n_classes=n_tasks * per_task,
                  task_classes=[tuple(range(t * per_task, (t + 1) * per_task)) for t in range(n_tasks)],
                  transform=Transform(pixel_max=255.0, mean=torch.full((c,), 0.5), std=torch.full((c,), 0.25)),
                  device=torch.device("cpu"), seed=seed, buffer_size=40 if cls.uses_buffer else 0,
                  make_net=lambda: None, artefacts=dict(artefacts or {}), input_shape=shape)
    return cls(None, hp, ctx)


def tasks(shape=(1, 8, 8), n_tasks=2, per_task=2, n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(n_tasks):
        y = torch.arange(t * per_task, (t + 1) * per_task).repeat(n // per_task)
        x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
        out.append(Task(t, tuple(range(t * per_task, (t + 1) * per_task)), x, y))
    return out


def run(model, task_list):
    for task in task_list:
        model.begin_task(task)
        model.train_task(task)
        model.end_task(task)


# -- hand-computed cases -----------------------------------------------------------------------------
def test_kl_to_a_gaussian_mode_and_both_divisors():
    z = mu = logvar = torch.zeros(1, 2)
    mode_mu, mode_logvar = torch.tensor([[1.0, 1.0]]), torch.tensor([[LN4, 0.0]])
    assert log_normal(z, mode_mu, mode_logvar).item() == pytest.approx(-1.3181472, rel=1e-6)
    for divisor, expected in (("input", 4.2908437e-4), ("features", 1.2872531e-3)):
        m = build("bir", shape=(3, 32, 32), conv="scratch", c0=16, z_dim=2, kl_divisor=divisor)
        assert m.net.convE.out_features == 1024
        with torch.no_grad():
            m.net.z_class_means[1], m.net.z_class_logvars[1] = mode_mu[0], mode_logvar[0]
        out = VAEPass(None, mu, logvar, z, None, None, None)
        assert m.kl_loss(m.net, out, y=torch.tensor([1])).item() == pytest.approx(expected, rel=1e-6)


def test_standard_prior_analytic_kl():
    kl = kl_standard(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, LN2]]))
    assert kl.item() == pytest.approx(0.6534264, rel=1e-6)


def test_mixture_kl_for_replay_and_zero_padding():
    scores = torch.tensor([[0.0, 2 * math.log(3.0)]])
    pi = torch.softmax(scores / 2.0, 1)
    assert pi.tolist()[0] == pytest.approx([0.25, 0.75])
    z, means, logvars = torch.zeros(1, 2), torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.zeros(2, 2)
    log_p = log_mixture(z, means, logvars, pi)
    assert log_p.item() == pytest.approx(-1.0455414, rel=1e-6)
    assert (log_normal(z, z, torch.zeros(1, 2)) - log_p).item() == pytest.approx(1.0455414, rel=1e-6)
    # one previous class, |C_t| = 2: π = (1, 0), the mixture is the previous class's mode
    m = build("bir", z_dim=2, kl_divisor="input")
    out = VAEPass(None, torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[0.3, -0.2]]), None, None, None)
    padded = torch.nn.functional.pad(torch.softmax(torch.tensor([[1.7]]) / 2.0, 1), (0, 1))
    assert padded.tolist() == [[1.0, 0.0]]
    mixed = m.kl_loss(m.net, out, pi=padded, head=(0, 2))
    assert mixed.item() == pytest.approx(m.kl_loss(m.net, out, y=torch.tensor([0])).item(), rel=1e-6)


def test_si_path_integral_toy_and_decoder_scope():
    enc, dec = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    si = SIImportance([enc, dec], xi=0.1, estimator="path_integral")
    for grad, update in (((1.0, -2.0), (-0.1, 0.2)), ((0.5, 1.0), (-0.05, -0.1))):
        si.before_step()
        for p in (enc, dec):
            p.grad = torch.tensor(grad)
            with torch.no_grad():
                p += torch.tensor(update)
        si_accumulate(si, [True, False])  # dec plays a decoder parameter under si_scope encoder_classifier
    assert si.small_omega[0].tolist() == pytest.approx([0.125, 0.5])
    assert si.small_omega[1].tolist() == [0.0, 0.0]
    si.consolidate()
    assert si.omega[0].tolist() == pytest.approx([1.0204082, 4.5454545], rel=1e-6)
    assert si.omega[1].tolist() == [0.0, 0.0]
    assert si.anchor[0].tolist() == pytest.approx([-0.15, 0.1])
    with torch.no_grad():
        enc.copy_(torch.tensor([0.5, 0.5]))
        dec.copy_(torch.tensor([0.5, 0.5]))
    assert float(si.penalty().detach()) == pytest.approx(1.1583952, rel=1e-6)


def test_si_scope_of_bir_si():
    m = build("bir_si")
    scoped = {n.split(".")[0] for (n, p), s in zip(((n, p) for n, p in m.net.named_parameters() if p.requires_grad),
                                                  m.si_scope) if s}
    assert scoped == {"fcE", "classifier"}
    run(m, tasks()[:1])
    names = [n for n, p in m.net.named_parameters() if p.requires_grad]
    for name, omega in zip(names, m.si.omega):
        assert (omega.abs().sum() > 0) == (name.split(".")[0] in ("fcE", "classifier")), name


def test_kd_equals_t2_entropy_when_logits_match_the_teacher():
    teacher = torch.tensor([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]])
    logits = torch.cat([teacher, torch.full((2, 2), -1e9)], 1)
    pi = torch.softmax(teacher / 2.0, 1)
    entropy = -(pi * pi.log()).sum(1).mean()
    assert kd_loss(logits, teacher, 2.0).item() == pytest.approx(4 * entropy.item(), rel=1e-6)


# -- gates -----------------------------------------------------------------------------------------
def test_gate_masks():
    m = build("bir", fc_units=200, n_tasks=5, dg_prop=0.7)
    masks = {k: v for k, v in m.state_dict().items() if k.startswith("net.") and k.endswith(".mask")}
    assert set(masks) == {"net.fromZ.mask", "net.fcD.0.mask"}  # the last decoder fc (toX) has none
    for mask in masks.values():
        assert mask.shape == (10, 200) and set(mask.unique().tolist()) <= {0.0, 1.0}
        sd = math.sqrt(0.7 * 0.3 / mask.numel())
        assert abs((mask == 0).float().mean().item() - 0.7) < 3 * sd
    before = {k: v.clone() for k, v in masks.items()}
    run(m, tasks(n_tasks=5)[:2])
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    fresh = build("bir", fc_units=200, n_tasks=5, dg_prop=0.7, seed=123)  # other seed: other masks until loaded
    assert not torch.equal(fresh.net.fromZ.mask, before["net.fromZ.mask"])
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=False))
    for k, v in before.items():
        assert torch.equal(m.state_dict()[k], v) and torch.equal(fresh.state_dict()[k], v)
    none = build("bir", dg_prop=0.0)
    assert not any(k.endswith("mask") for k in none.state_dict())


# -- frozen conv, internal replay -------------------------------------------------------------------
@pytest.fixture
def conv_file(tmp_path):
    conv = ConvE(3, 4)
    for module in conv.modules():  # non-default BN statistics, so a drift would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(7)
    torch.save(conv.state_dict(), tmp_path / "conv.pt")
    return tmp_path / "conv.pt"


@pytest.mark.parametrize("method", ["bir", "dgr_int", "bir_no_int"])
def test_frozen_conv_is_bitwise_unchanged_and_not_optimised(method, conv_file):
    shape = (3, 32, 32)
    m = build(method, shape=shape, conv="pretrained", c0=4, recon_loss="mse", artefacts={"bir_conv": conv_file})
    run(m, tasks(shape, n=16))
    reference = torch.load(conv_file)
    models = [m.net, m.prev] + ([m.gen, m.prev_gen] if m.gen is not None else [])
    for model in models:
        state = model.convE.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    conv_params = {id(p) for model in models for p in model.convE.parameters()}
    optimisers = [m.opt] + ([m.opt_gen] if m.gen is not None else [])
    assert not any(id(p) in conv_params for opt in optimisers for g in opt.param_groups for p in g["params"])


def test_resume_at_a_task_boundary_with_internal_replay(conv_file):
    shape, kw = (3, 32, 32), dict(conv="pretrained", c0=4, recon_loss="mse", artefacts={"bir_conv": conv_file})
    data = tasks(shape, n_tasks=3, n=16)
    a = build("bir_si", shape=shape, n_tasks=3, **kw)
    run(a, data[:1])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    torch.manual_seed(99)
    b = build("bir_si", shape=shape, n_tasks=3, **kw)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=False))
    run(a, data[1:])
    run(b, data[1:])
    x = a.transform.test(data[0].x)
    assert torch.equal(a.eval().predict(x), b.eval().predict(x))


# -- replay ----------------------------------------------------------------------------------------
def test_no_replay_at_the_first_task():
    m = build("bir")
    task = tasks()[0]
    m.begin_task(task)
    x, y = m.rows(task.x[:8]), task.y[:8]
    logs = m.train_step(x, y)
    assert set(logs) == {"loss", "rec", "kl", "ce"}
    assert logs["loss"].item() == pytest.approx(sum(logs[k].item() for k in ("rec", "kl", "ce")), rel=1e-6)


def test_sampled_classes_are_previous_and_uniform():
    m = build("bir", n_tasks=5, dg_prop=0.5)
    allowed = torch.arange(0, 6)
    _, c = m.prev.eval().sample(10_000, allowed, m.generator)
    assert set(c.unique().tolist()) == set(range(6))
    assert chisquare(torch.bincount(c, minlength=6).numpy()).pvalue > 1e-3
    m.task = 3  # fourth task: replay over C_3 = classes 0..5
    reps = m.replay(None, None)
    assert len(reps) == 1 and reps[0].sampled.max().item() <= 5 and reps[0].head == (0, 8)
    assert reps[0].scores.shape == (8, 6) and reps[0].prev_classes.tolist() == list(range(6))
    assert torch.allclose(reps[0].gate[:, 6:], torch.zeros(8, 4)) and torch.allclose(reps[0].gate.sum(1), torch.ones(8))


def test_task_il_conditional_replay_per_previous_task():
    m = build("bir", n_tasks=4, scenario="task", batch_size=5)
    m.task = 2  # t = 3: ceil(5 / 2) = 3 samples of each previous task
    reps = m.replay(None, None)
    assert [r.x.shape[0] for r in reps] == [3, 3]
    for k, rep in enumerate(reps):
        assert rep.head == (2 * k, 2 * k + 2) and rep.scores.shape == (3, 2)
        assert ((rep.sampled >= 2 * k) & (rep.sampled < 2 * k + 2)).all()
        outside = torch.ones(rep.gate.shape[1], dtype=torch.bool)
        outside[2 * k:2 * k + 2] = False
        assert (rep.gate[:, outside] == 0).all()


def test_teacher_is_the_boundary_copy_and_frozen_within_a_task():
    m = build("bir")
    data = tasks()
    run(m, data[:1])
    boundary = {k: v.clone() for k, v in m.net.state_dict().items()}
    assert all(torch.equal(m.prev.state_dict()[k], v) for k, v in boundary.items())
    m.begin_task(data[1])
    m.train_task(data[1])
    assert all(torch.equal(m.prev.state_dict()[k], v) for k, v in boundary.items())
    assert not all(torch.equal(m.net.state_dict()[k], v) for k, v in boundary.items())
    assert not m.prev.training and not any(p.requires_grad for p in m.prev.parameters())


@pytest.mark.parametrize("t", [1, 2, 3, 4])
def test_one_over_t_weighting(t, monkeypatch):
    assert mix(2.0, None, 1) == 2.0
    m = build("bir", n_tasks=4)
    m.task = t - 1
    w = torch.ones((), requires_grad=True)
    monkeypatch.setattr(m, "replay", lambda x, y: [None])
    monkeypatch.setattr(m, "current_terms", lambda model, x, y: ({"cur": 2.0 * w}, None))
    monkeypatch.setattr(m, "replay_losses", lambda model, reps, hooks: ({"rpl": 5.0 * w}, (None, None)))
    loss = m.train_step(None, None)["loss"].item()
    assert loss == pytest.approx(2.0 if t == 1 else 2.0 / t + (1 - 1 / t) * 5.0)


def test_adam_steps_keep_growing_across_tasks():
    m = build("dgr")
    data = tasks()
    steps = []
    for task in data:
        run(m, [task])
        states = list(m.opt.state.values()) + list(m.opt_gen.state.values())
        steps.append([int(s["step"]) for s in states])
    assert set(steps[0]) == {5} and set(steps[1]) == {10}


# -- whole runs on seq-digits -----------------------------------------------------------------------
def _train(prepared_dir, out, method, buffer_size, hparams_dir, **overrides):
    hp = resolve(method, "seq-digits", buffer_size, {**TINY, "iters": 10, "batch_size": 16, **overrides}, hparams_dir)
    return run_training("seq-digits", method, buffer_size, 0, hp, prepared_dir, out)


@pytest.mark.parametrize("method,buffer_size,overrides", [("bir_si", 0, {"si_c": 1.0}), ("dgr", 0, {}),
                                                          ("gr_er", 20, {"scenario": "task"}), ("gr_ewc", 0, {}),
                                                          ("gr_joint", 0, {"scenario": "task"})])
def test_resume_reproduces_the_next_accuracy_row(prepared_dir, tmp_path, monkeypatch, method, buffer_size, overrides):
    hparams_dir = tmp_path / "hparams"
    hparams_dir.mkdir()
    _train(prepared_dir, tmp_path / "ref", method, buffer_size, hparams_dir, **overrides)
    reference = load_metrics(tmp_path / "ref/metrics.parquet")
    with killed_at_task(monkeypatch, get_method(method)[0]), pytest.raises(KeyboardInterrupt):
        _train(prepared_dir, tmp_path / "run", method, buffer_size, hparams_dir, **overrides)
    _train(prepared_dir, tmp_path / "run", method, buffer_size, hparams_dir, **overrides)
    resumed = load_metrics(tmp_path / "run/metrics.parquet")
    accuracy = lambda m: m[m.metric == "accuracy"].reset_index(drop=True)
    pd.testing.assert_frame_equal(accuracy(resumed), accuracy(reference))
    assert np.isfinite(accuracy(reference)["value"]).all()
