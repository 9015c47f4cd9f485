"""AR1*'s components (docs/ar1.md#cwr, docs/ar1.md#latent-replay): CWR*'s consolidation with both class
multiplicities, the latent memory's quotas and updates, the minibatch plan and batch-0 padding, all by hand."""

from __future__ import annotations

import pytest
import torch

from clcore.methods.ar1 import CWRStar, LatentMemory, current_classes, insert_count, minibatch_plan, pad_to_multiple


def test_cwr_unique_hand_case():
    cwr = CWRStar(4, 2)
    cwr.consolidated[0], cwr.consolidated[1] = torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0])
    cwr.defined[:2] = True
    cwr.past[:3] = torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)
    weight = torch.tensor([[1.0, 3.0], [2.0, 0.0], [-1.0, 1.0], [7.0, 7.0]])
    counts = torch.tensor([1.0, 4.0, 2.0, 0.0], dtype=torch.float64)
    cwr.consolidate(weight, [0, 1, 2], counts)  # ḡ = 1
    expected = torch.tensor([[2.0, 2 / 3], [1.0, -1 / 3], [-2.0, 0.0]])
    assert torch.allclose(cwr.consolidated[:3], expected, atol=1e-6) and not cwr.defined[3]
    cwr.add_counts(counts)
    assert cwr.past[:3].tolist() == [5.0, 5.0, 2.0]
    cwr.load(weight)
    assert torch.allclose(weight[:3], expected, atol=1e-6) and weight[3].tolist() == [7.0, 7.0]  # never consolidated
    cwr.reset(weight, [0, 2])
    assert torch.allclose(weight, torch.tensor([[2.0, 2 / 3], [0.0, 0.0], [-2.0, 0.0], [0.0, 0.0]]), atol=1e-6)


@pytest.mark.parametrize("multiplicity, cw0, cw1", [
    ("upstream", (4 / 3, 10 / 9), (-2.0, -2.0)),   # ḡ = 2 over rows [W0, W0, W1]; the update applied twice
    ("unique", (13 / 6, 5 / 6), (-1.5, -1.5)),     # ḡ = 1.5 over rows [W0, W1]
])
def test_cwr_class_multiplicity(multiplicity, cw0, cw1):
    classes = current_classes(torch.tensor([0, 1, 1]), torch.tensor([0]), multiplicity)  # class 0: batch + 1 slot
    assert classes == ([0, 0, 1] if multiplicity == "upstream" else [0, 1])
    cwr = CWRStar(2, 2)
    cwr.consolidated[0], cwr.defined[0], cwr.past[0] = torch.tensor([3.0, 0.0]), True, 8.0
    weight = torch.tensor([[2.0, 4.0], [0.0, 0.0]])
    cwr.consolidate(weight, classes, torch.tensor([2.0, 2.0], dtype=torch.float64))  # α₀ = sqrt(8 / 2) = 2
    assert torch.allclose(cwr.consolidated, torch.tensor([cw0, cw1]), atol=1e-6)


def test_memory_quotas_by_hand():
    assert [insert_count(i, 6, 8 if i == 0 else 4) for i in range(7)] == [6, 3, 2, 1, 1, 1, 0]
    assert [insert_count(i, 1500, 3072 if i == 0 else 294) for i in range(7)] == [1500, 294, 294, 294, 294, 250, 214]


def test_memory_updates_keep_activations_with_their_labels():
    g = torch.Generator().manual_seed(0)
    memory = LatentMemory(6)
    labels = torch.arange(8)
    memory.update(labels.float().view(-1, 1, 1, 1).expand(-1, 2, 2, 2), labels, 0, g)
    assert len(memory) == 6 and len(set(memory.labels.tolist())) == 6
    new = torch.tensor([10, 11, 12, 13])
    before = memory.labels.clone()
    assert memory.update(new.float().view(-1, 1, 1, 1).expand(-1, 2, 2, 2), new, 1, g) == 3
    assert (memory.labels >= 10).sum() == 3 and (memory.labels != before).sum() == 3 and len(memory) == 6
    for i in range(2, 52):  # 50 random updates: every activation still carries its label's value
        batch = torch.randint(0, 50, (4,), generator=g)
        memory.update(batch.float().view(-1, 1, 1, 1).expand(-1, 2, 2, 2), batch, i, g)
        assert torch.equal(memory.activations[:, 0, 0, 0], memory.labels.float()) and len(memory) == 6
    small = LatentMemory(6)
    small.update(torch.zeros(4, 1, 1, 1), torch.arange(4), 0, g)
    small.update(torch.ones(4, 1, 1, 1), torch.arange(4), 1, g)
    assert len(small) == 4  # a batch 0 smaller than the capacity fixes the size for ever


def test_memory_round_trips_through_state_dict():
    g = torch.Generator().manual_seed(0)
    memory = LatentMemory(5)
    memory.update(torch.randn(7, 3, 2, 2), torch.arange(7), 0, g)
    restored = LatentMemory(5)
    restored.load_state_dict(memory.state_dict())
    assert torch.equal(restored.activations, memory.activations) and torch.equal(restored.labels, memory.labels)


@pytest.mark.parametrize("n, memory, batch, plan", [
    (300, 1500, 128, (14, 21, 107)), (299, 1500, 128, (14, 21, 107)), (293, 1500, 128, (14, 20, 108)),
    (600, 1500, 128, (16, 37, 91)), (1500, 1500, 128, (23, 65, 63)), (60, 60, 24, (5, 12, 12)),
    (300, 0, 128, (2, 150, 0)),
])
def test_minibatch_plan(n, memory, batch, plan):
    assert minibatch_plan(n, memory, batch) == plan


def test_batch_zero_padding_prepends_the_first_patterns():
    assert pad_to_multiple(5, 4).tolist() == [0, 1, 2, 0, 1, 2, 3, 4]
    assert len(pad_to_multiple(2999, 128)) == 3072 and len(pad_to_multiple(2999, 128)) // 128 == 24
    assert pad_to_multiple(8, 4).tolist() == list(range(8))


@pytest.mark.parametrize("omega_max, importance", [(1e-3, 1e-3), (10.0, 0.5 / (0.09 + 1e-7))])
def test_si_scalar_case_with_the_cap_applied_where_it_is_read(omega_max, importance):
    from clcore.methods.baselines import SIImportance

    theta = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([theta], lr=0.1)
    si = SIImportance([theta], xi=1e-7, estimator="path_integral", omega_max=omega_max, clip="read")
    for grad, expected in ((2.0, 0.8), (1.0, 0.7)):
        si.before_step()
        theta.grad = torch.tensor([grad])
        opt.step()
        si.after_step(lr=0.1)
        assert theta.item() == pytest.approx(expected)
    assert si.small_omega[0].item() == pytest.approx(0.5)  # −ω of the reference code: 2·0.2 + 1·0.1
    si.consolidate()
    assert si.omega[0].item() == pytest.approx(5.555549, rel=1e-6)  # stored unclipped: Ω = 0.5 / (0.09 + 1e-7)
    assert si.importance()[0].item() == pytest.approx(importance, rel=1e-6)
    with torch.no_grad():
        theta.fill_(0.9)  # θ* = 0.7
    assert si.penalty().detach().item() == pytest.approx(importance * 0.04, rel=1e-5)  # AR1* weighs it by λ/2
