import numpy as np
import pytest
import torch
from scipy import stats

from clcore.augment import Transform
from clcore.buffers import ClassBalancedBuffer, ReservoirBuffer, herding


def make_buffer(capacity, seed=0):
    return ReservoirBuffer(capacity, "cpu", torch.Generator().manual_seed(seed))


def reference_insert(contents, n, items, draws, capacity):
    """One-by-one reservoir sampling with given draws (the specification)."""
    contents = list(contents)
    for item, r in zip(items, draws):
        if n < capacity:
            contents[n] = item
        elif r < capacity:
            contents[r] = item
        n += 1
    return contents, n


def test_spec_example_one_by_one_and_vectorised():
    # docs/baselines.md#replay-buffers: M = 3, s0..s2 fill the slots; s3, s4, s5 with draws (1, 4, 1) -> (s0, s5, s2)
    for batches in ([[0], [1], [2], [3], [4], [5]], [[0, 1, 2], [3, 4, 5]]):
        buf = make_buffer(3)
        draws = iter([0, 0, 0, 1, 4, 1])
        buf.draw = lambda n: torch.tensor([next(draws) for _ in range(n.shape[0])])
        for batch in batches:
            buf.add(y=torch.tensor(batch))
        assert buf.data["y"][:3].tolist() == [0, 5, 2]
        assert buf.num_seen == 6 and len(buf) == 3


def test_vectorised_equals_one_by_one_for_random_batches():
    rng = np.random.default_rng(0)
    for trial in range(1000):
        capacity = int(rng.integers(1, 8))
        buf = make_buffer(capacity, trial)
        contents, n = [None] * capacity, 0
        for _ in range(int(rng.integers(1, 5))):
            items = torch.tensor(rng.integers(0, 1000, size=int(rng.integers(1, 12))))
            recorded = []
            original = buf.draw
            buf.draw = lambda idx, original=original: recorded.append(original(idx)) or recorded[-1]
            buf.add(y=items)
            buf.draw = original
            contents, n = reference_insert(contents, n, items.tolist(), recorded[0].tolist(), capacity)
        assert buf.data["y"][: len(buf)].tolist() == contents[: len(buf)]
        assert buf.num_seen == n


def test_reservoir_inclusion_is_uniform():
    trials, counts = 20000, np.zeros(100)
    gen = torch.Generator().manual_seed(0)
    for _ in range(trials):
        buf = ReservoirBuffer(10, "cpu", gen)
        buf.add(y=torch.arange(50))
        buf.add(y=torch.arange(50, 100))
        counts[buf.data["y"][:10].numpy()] += 1
    freq = counts / trials
    assert np.all(np.abs(freq - 0.1) < 0.01)
    assert stats.chisquare(counts).pvalue > 0.001


def test_sample_is_without_replacement_and_never_modifies_storage():
    buf = make_buffer(20)
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    buf.add(x=images, y=torch.arange(20))
    before = buf.data["x"].clone()
    transform = Transform(255.0, torch.zeros(3), torch.ones(3), crop_padding=2, hflip=True)
    out = buf.sample(15, transform)
    assert len(set(out["index"].tolist())) == 15
    assert out["x"].dtype == torch.float32
    assert torch.equal(buf.data["x"], before)
    assert buf.data["x"].dtype == torch.uint8
    assert torch.equal(buf.data["x"][:20], images)  # lossless storage
    assert buf.sample(50)["y"].shape[0] == 20  # k > len returns len items


def test_state_dict_round_trip_continues_identically():
    a = make_buffer(5, seed=3)
    a.add(y=torch.arange(12))
    state = {k: (v.copy() if isinstance(v, dict) else v) for k, v in a.state_dict().items()}
    b = make_buffer(5, seed=99)
    b.load_state_dict({"num_seen": state["num_seen"], "data": {k: t.clone() for k, t in state["data"].items()},
                       "rng": state["rng"].clone()})
    a.add(y=torch.arange(12, 30))
    b.add(y=torch.arange(12, 30))
    assert torch.equal(a.data["y"], b.data["y"]) and a.num_seen == b.num_seen


def brute_force_herding(features, m):
    mu, picked, total = features.mean(0), [], torch.zeros(features.shape[1])
    for k in range(m):
        best = min((i for i in range(len(features)) if i not in picked),
                   key=lambda i: float(torch.linalg.vector_norm(mu - (total + features[i]) / (k + 1))))
        picked.append(best)
        total += features[best]
    return picked


def test_herding_spec_example_and_brute_force():
    feats = torch.tensor([[0.0], [1.0], [2.0], [10.0]])  # μ = 3.25
    assert herding(feats, 2).tolist() == [2, 1]
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        f = torch.randn(12, 3, generator=gen)
        assert herding(f, 5).tolist() == brute_force_herding(f, 5)


def test_class_balanced_buffer_keeps_first_m_of_old_classes():
    buf = ClassBalancedBuffer(8, "cpu", torch.Generator().manual_seed(0), selection="herding")
    x1 = torch.arange(20, dtype=torch.uint8).reshape(20, 1, 1, 1)
    y1 = torch.tensor([0] * 10 + [1] * 10)
    feats = lambda x: x.float().flatten(1)
    buf.update(x1, y1, 2, feats)
    assert (buf.y == 0).sum() == 4 and (buf.y == 1).sum() == 4
    old_class0 = buf.x[buf.y == 0][:2].clone()
    buf.update(x1 + 100, y1 + 2, 4, feats)
    assert all((buf.y == c).sum() == 2 for c in range(4))
    assert torch.equal(buf.x[buf.y == 0], old_class0)
    with pytest.raises(ValueError):
        ClassBalancedBuffer(8, "cpu", torch.Generator(), selection="kmeans")


# the four unit vectors of docs/baselines.md#herding-variants: μ = (0.25, 0.65)
UNIT_VECTORS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-0.6, 0.8]])


def test_herding_variants_by_hand():
    """icarl_w re-picks p2 at its third iteration (score 0.21, w becomes (-0.2, 0)) and needs five iterations;
    exclude never looks at a picked vector again."""
    from clcore.buffers import herding_icarl_w

    assert herding_icarl_w(UNIT_VECTORS, 4).tolist() == [2, 1, 3, 0]
    assert herding_icarl_w(UNIT_VECTORS, 4, max_iterations=4).tolist() == [2, 1, 3, 0][:3] + [0]  # cap: fill
    assert herding_icarl_w(UNIT_VECTORS, 4, max_iterations=3).tolist() == [2, 1, 0, 3]  # remaining, ascending
    assert herding(UNIT_VECTORS, 4).tolist() == [2, 1, 0, 3]


def test_herding_variants_agree_without_a_repick():
    """On unit vectors both pick argmax <kμ − Σ picked, φ>: icarl_w differs only where it re-picks."""
    from clcore.buffers import herding_icarl_w

    gen, agreed = torch.Generator().manual_seed(0), 0
    for _ in range(100):
        f = torch.nn.functional.normalize(torch.randn(12, 3, generator=gen), dim=1)
        m = 5
        w, picks, repick = f.mean(0).clone(), [], False
        for _ in range(m):  # icarl_w's first m iterations: a re-pick among them means the variants may differ
            k = int(torch.argmax(f @ w))
            repick |= k in picks
            picks.append(k)
            w += f.mean(0) - f[k]
        if not repick:
            agreed += 1
            assert herding_icarl_w(f, m).tolist() == herding(f, m).tolist() == brute_force_herding(f, m)
    assert agreed > 50


@pytest.mark.parametrize("n_seen, quota", [(10, 200), (20, 100), (30, 66), (40, 50), (100, 20)])
def test_memory_quota_is_k_over_the_classes_counted(n_seen, quota):
    """K = 2000: shrinking counts the seen classes (10, 20, 30, 40 -> 200, 100, 66, 50); fixed counts all 100."""
    buf = ClassBalancedBuffer(2000, "cpu", torch.Generator().manual_seed(0), selection="random")
    y = torch.arange(n_seen).repeat_interleave(250)
    buf.update(torch.zeros(len(y), 1, 1, 1, dtype=torch.uint8), y, n_seen)
    assert all(int((buf.y == c).sum()) == quota for c in range(n_seen)) and len(buf) <= 2000
