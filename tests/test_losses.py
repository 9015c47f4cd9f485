"""Each method's loss or update against values computed by hand on tiny tensors."""

import math

import pytest
import torch
from torch import nn

from clcore.augment import Transform
from clcore.backbones import CosineLinear
from clcore.hparams import make_hparams
from clcore.methods import get_method
from clcore.methods.base import Context
from clcore.methods.baselines import EWCFisher, SIImportance, ace_mask
from clcore.methods.baselines.lwf import icarl_targets, smooth_softmax, soft_cross_entropy
from clcore.scenarios import Task


class Identity2(nn.Module):
    """logits = the 2 pixel values of a [B,2,1,1] image; `features` for methods that need it."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.eye(2))
        self.feature_dim = 2

    def features(self, x):
        return x.flatten(1)

    def forward(self, x):
        return self.classifier(self.features(x))


def make(method, buffer_size=0, **hp):
    cls, defaults = get_method(method)
    transform = Transform(1.0, torch.zeros(2), torch.ones(2))  # identity on values
    ctx = Context(n_classes=2, task_classes=[(0,), (1,)], transform=transform, device=torch.device("cpu"), seed=0,
                  buffer_size=buffer_size, make_net=Identity2)
    return cls(Identity2(), make_hparams(method, {**defaults, **hp}), ctx)


def ce(logits, label):
    return -logits[label] + math.log(sum(math.exp(v) for v in logits))


def test_derpp_loss_by_hand():
    m = make("derpp", buffer_size=2, alpha=0.5, beta=1.0, minibatch_size=2, lr=0.0)
    buf_x = torch.tensor([[3, 1], [0, 2]], dtype=torch.uint8)[:, :, None, None]
    buf_y, buf_z = torch.tensor([0, 1]), torch.tensor([[1.0, 1.0], [0.5, 2.5]])
    m.buffer.add(x=buf_x, y=buf_y, logits=buf_z)
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0]])[:, :, None, None]
    m.begin_task(Task(1, (1,), x, torch.tensor([0, 1])))
    losses = m.observe(x, torch.tensor([0, 1]), x.to(torch.uint8))
    stream = (ce([2, 0], 0) + ce([0, 1], 1)) / 2
    mse = ((3 - 1) ** 2 + (1 - 1) ** 2 + (0 - 0.5) ** 2 + (2 - 2.5) ** 2) / 4
    replay = (ce([3, 1], 0) + ce([0, 2], 1)) / 2
    assert losses["loss"].item() == pytest.approx(stream + 0.5 * mse + 1.0 * replay, abs=1e-6)


def test_derpp_draws_two_independent_index_sets():
    m = make("derpp", buffer_size=8, minibatch_size=2, lr=0.0)
    m.buffer.add(x=torch.zeros(8, 2, 1, 1, dtype=torch.uint8), y=torch.zeros(8, dtype=torch.long),
                 logits=torch.zeros(8, 2))
    drawn, sample = [], m.buffer.sample
    m.buffer.sample = lambda k, t=None: drawn.append(sample(k, t)) or drawn[-1]
    m.observe(torch.zeros(2, 2, 1, 1), torch.tensor([0, 1]), torch.zeros(2, 2, 1, 1, dtype=torch.uint8))
    assert len(drawn) == 2 and set(drawn[0]["index"].tolist()) != set(drawn[1]["index"].tolist())


def test_er_ace_mask_spec_cases():
    y = torch.tensor([2, 3])
    assert ace_mask(y, torch.tensor(3), 6).nonzero().flatten().tolist() == [2, 3, 4, 5]
    assert ace_mask(y, torch.tensor(5), 6).nonzero().flatten().tolist() == [2, 3]


def test_er_ace_masks_nothing_in_the_first_task():
    m = make("er_ace", buffer_size=4, lr=0.0)
    x = torch.tensor([[1.0, 3.0]])[:, :, None, None]
    m.begin_task(Task(0, (0,), x, torch.tensor([0])))
    loss = m.observe(x, torch.tensor([0]), x.to(torch.uint8))["loss"].item()
    assert loss == pytest.approx(ce([1, 3], 0), abs=1e-6)  # class 1 logit still competes


def test_er_ace_cosine_classifier_by_hand():
    m = make("er_ace", buffer_size=4, lr=0.0, classifier="cosine")
    head = m.net.classifier
    assert isinstance(head, CosineLinear)
    assert any(p is head.weight for p in m.opt.param_groups[0]["params"])  # the optimiser trains the new head
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    x = torch.tensor([[3.0, 4.0]])[:, :, None, None]
    assert torch.allclose(m.net(x), torch.tensor([[6.0, 8.0]]))  # 10 · ([3, 4]/5 · unit rows)
    with pytest.raises(ValueError, match="classifier"):
        make("er_ace", buffer_size=4, classifier="cosin")


def test_icarl_targets_spec_case():
    target = icarl_targets(torch.tensor([3]), torch.tensor([[0.2, 0.9, 0.4, 0.7]]), past=2, seen=4)
    assert torch.allclose(target, torch.tensor([[0.2, 0.9, 0.0, 1.0]]))


def test_lwf_smoothed_distillation_by_hand():
    old, new = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    s = lambda u: [math.exp(v / 2) / sum(math.exp(w / 2) for w in u) for v in u]  # softmax^(1/2) renormalised
    expected = -sum(p * math.log(q) for p, q in zip(s([1, 0]), s([0, 1])))
    got = soft_cross_entropy(smooth_softmax(old, 2.0), smooth_softmax(new, 2.0))
    assert got.item() == pytest.approx(expected, abs=1e-6)


class OneParamLogistic(nn.Module):
    """logits = [w x, 0]: p(0|x) = σ(w x)."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        z = self.w * x.flatten()
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def test_ewc_fisher_closed_forms_and_online_sum():
    xs, ys, w = torch.tensor([1.0, -2.0]), torch.tensor([0, 1]), 0.5
    sig = [1 / (1 + math.exp(-w * x)) for x in xs.tolist()]
    # d/dw log p(0|x) = x (1 - σ), d/dw log p(1|x) = -x σ
    g = {0: [x * (1 - s) for x, s in zip(xs.tolist(), sig)], 1: [-x * s for x, s in zip(xs.tolist(), sig)]}
    p = {0: sig, 1: [1 - s for s in sig]}
    empirical = sum(g[y][k] ** 2 for k, y in enumerate(ys.tolist())) / 2
    mammoth = sum(p[y][k] * g[y][k] ** 2 for k, y in enumerate(ys.tolist())) / 2
    expected = sum(p[c][k] * g[c][k] ** 2 for k in range(2) for c in (0, 1)) / 2
    for kind, value in (("empirical", empirical), ("mammoth", mammoth), ("expected", expected)):
        fisher = EWCFisher(OneParamLogistic(w), fisher=kind).estimate(xs[:, None], ys, batch_size=2)
        assert fisher[0].item() == pytest.approx(value, rel=1e-5), kind
    ewc = EWCFisher(OneParamLogistic(w), gamma=0.7)
    ewc.update([torch.tensor(2.0)])
    ewc.update([torch.tensor(3.0)])
    assert ewc.importance[0].item() == pytest.approx(0.7 * 2 + 3)
    with torch.no_grad():
        ewc.params[0].add_(1.5)
    assert ewc.penalty().item() == pytest.approx(4.4 * 1.5 ** 2)


def quadratic_run(estimator, optimizer):
    theta = nn.Parameter(torch.tensor(0.0))
    si = SIImportance([theta], xi=0.1, estimator=estimator)
    opt = optimizer([theta])
    for _ in range(10):
        loss = 0.5 * (theta - 1) ** 2
        opt.zero_grad()
        loss.backward()
        si.before_step()
        opt.step()
        si.after_step(lr=0.1)
    return si, theta


def test_si_estimators_agree_for_plain_sgd_and_differ_for_adam():
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)
    (a, theta), (b, _) = quadratic_run("path_integral", sgd), quadratic_run("lr_grad_sq", sgd)
    # θ_k = 1 - 0.9^k, g_k = θ_k - 1 = -0.9^k: W = Σ 0.1 · 0.81^k for k = 0..9
    w_hand = sum(0.1 * 0.81 ** k for k in range(10))
    assert a.small_omega[0].item() == pytest.approx(w_hand, rel=1e-5)
    assert b.small_omega[0].item() == pytest.approx(w_hand, rel=1e-5)
    a.consolidate()
    delta = 1 - 0.9 ** 10
    assert a.omega[0].item() == pytest.approx(w_hand / (delta ** 2 + 0.1), rel=1e-5)
    adam = lambda p: torch.optim.Adam(p, lr=0.1)
    c, d = quadratic_run("path_integral", adam)[0], quadratic_run("lr_grad_sq", adam)[0]
    assert abs(c.small_omega[0].item() - d.small_omega[0].item()) > 1e-3


def test_ewc_online_penalty_enters_the_loss():
    m = make("ewc_on", ewc_lambda=2.0, lr=0.0)
    x = torch.tensor([[1.0, 0.0]])[:, :, None, None]
    m.ewc.update([torch.ones(2, 2)])
    with torch.no_grad():
        m.net.classifier.weight.add_(0.5)
    loss = m.observe(x, torch.tensor([0]), x.to(torch.uint8))
    assert loss["penalty"].item() == pytest.approx(4 * 0.25)
    assert loss["loss"].item() == pytest.approx(ce([1.5, 0.5], 0) + 2.0 * 1.0, abs=1e-6)


@pytest.mark.parametrize("policy, quotas", [("shrinking", [2, 1]), ("fixed", [1, 1])])
def test_icarl_memory_policy_counts_seen_or_all_classes(policy, quotas):
    """K = 2, one class per task: shrinking keeps 2 exemplars of class 0 after task 1, then 1 of each; fixed
    keeps K // 2 = 1 from the start."""
    m = make("icarl", buffer_size=2, memory_policy=policy)
    for t, quota in enumerate(quotas):
        x = torch.rand(6, 2, 1, 1)
        task = Task(t, (t,), (x * 255).to(torch.uint8), torch.full((6,), t))
        m.begin_task(task)
        m.end_task(task)
        assert all(int((m.buffer.y == c).sum()) == quota for c in range(t + 1))


def test_icarl_nearest_mean_scores_by_hand():
    """μ_A = (1, 0), μ_B = (0, 1), φ(x) = (3, 1) -> φ̄ = (0.948683, 0.316228): scores -‖φ̄ - μ‖² =
    (-0.102633, -1.367544), prediction A."""
    m = make("icarl", buffer_size=2, nmc="current")
    m.buffer.x, m.buffer.y = torch.zeros(2, 2, 1, 1, dtype=torch.uint8), torch.tensor([0, 1])
    m.class_means = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores = m.predict(torch.tensor([[3.0], [1.0]]).reshape(1, 2, 1, 1))
    assert scores[0].tolist() == pytest.approx([-0.102633, -1.367544], abs=1e-6) and int(scores.argmax()) == 0


def test_icarl_bce_with_distillation_by_hand():
    """3 old + 2 new classes, logits (2, -1, 0 | 1, -2), teacher logits (2, -1, 0), label class 3: targets
    (σ(2), σ(-1), 0.5, 1, 0) = (0.8808, 0.2689, 0.5, 1, 0); BCE 0.416175 averaged, 2.080874 summed; with zero
    logits it is ln 2 whatever the targets."""
    logits = torch.tensor([[2.0, -1.0, 0.0, 1.0, -2.0]])
    targets = icarl_targets(torch.tensor([3]), torch.sigmoid(torch.tensor([[2.0, -1.0, 0.0]])), past=3, seen=5)
    assert targets[0].tolist() == pytest.approx([0.880797, 0.268941, 0.5, 1.0, 0.0], abs=1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert float(bce(logits, targets)) == pytest.approx(0.416175, abs=1e-6)
    assert float(bce(logits, targets, reduction="sum")) == pytest.approx(2.080874, abs=1e-6)
    assert float(bce(torch.zeros(1, 5), targets)) == pytest.approx(math.log(2), abs=1e-7)
