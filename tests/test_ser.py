"""SER's method logic (docs/ser.md#unit-checks): modulation identities, pooling, gradient isolation between the two
branches, the order of operations inside a step, the ER-ACE mask timing, and checkpoint round trips."""

import copy

import pytest
import torch
import torch.nn.functional as F

from clcore.augment import Transform
from clcore.backbones.resnet import ResNet18, pool
from clcore.hparams import make_hparams
from clcore.methods import get_method
from clcore.methods.base import Context
from clcore.methods.ser.methods import check_modulation
from clcore.methods.ser.saliency import SaliencyPredictor, save_predictor
from clcore.scenarios import Task

SHAPE = (3, 16, 16)


@pytest.fixture
def predictor_path(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "saliency_predictor.pt"
    save_predictor(path, SaliencyPredictor(SHAPE, nf=4, widths=(8, 8, 4)))
    return path


def make(name, predictor_path, **values):
    cls, defaults = get_method(name)
    hp = make_hparams(name, {**defaults, "batch_size": 4, "minibatch_size": 4, **values})
    torch.manual_seed(1)
    transform = Transform(255.0, torch.zeros(3), torch.ones(3))
    ctx = Context(n_classes=4, task_classes=[(0, 1), (2, 3)], transform=transform, device=torch.device("cpu"),
                  seed=0, buffer_size=20, make_net=lambda: ResNet18(SHAPE, 4, nf=4),
                  artefacts={"saliency_predictor": predictor_path})
    return cls(ctx.make_net(), hp, ctx)


def batch(seed=0, n=4, labels=(0, 1)):
    g = torch.Generator().manual_seed(seed)
    x_raw = torch.randint(0, 256, (n, *SHAPE), generator=g, dtype=torch.uint8)
    y = torch.tensor([labels[k % len(labels)] for k in range(n)])
    sal = torch.randint(0, 256, (n, 1, *SHAPE[1:]), generator=g, dtype=torch.uint8)
    return x_raw.float() / 255, y, x_raw, sal


def test_pooling_legacy_square_and_global():
    h = torch.tensor([[[[1.0, 2, 3], [4, 5, 6]]]])
    assert pool(h, "legacy_square").item() == 3.0 and pool(h, "global").item() == 3.5


def test_multiply_with_unit_features_or_no_taps_is_the_plain_classifier(predictor_path):
    method = make("derpp_ser", predictor_path).eval()
    x = batch()[0]
    plain = method.net.classifier(method.net.forward_taps(x)[1])
    taps, _ = method.net.forward_taps(x)
    method._stream_taps = [torch.ones_like(t) for t in taps]
    assert torch.allclose(method.classify(x, stream=True), plain, atol=1e-6)
    off = make("derpp_ser", predictor_path, mnp_blocks=(0, 0, 0, 0, 0)).eval()
    off._stream_taps = [torch.randn_like(t) for t in taps]
    assert torch.allclose(off.classify(x, stream=True), off.net.classifier(off.net.forward_taps(x)[1]), atol=1e-6)


def test_multiply_with_zero_last_features_leaves_the_head_bias(predictor_path):
    method = make("er_ace_ser", predictor_path).eval()
    x = batch()[0]
    taps, _ = method.net.forward_taps(x)
    method._stream_taps = [torch.ones_like(t) for t in taps[:4]] + [torch.zeros_like(taps[4])]
    logits = method.classify(x, stream=True)
    assert torch.allclose(logits, method.net.classifier.bias.expand_as(logits), atol=1e-6)


def test_encoder_and_classifier_taps_have_equal_shapes(predictor_path):
    method = make("derpp_ser", predictor_path)
    x = batch()[0]
    s, q = method.saliency(x)
    p, _ = method.net.forward_taps(x)
    assert [t.shape for t in q] == [t.shape for t in p]
    assert s.shape == (4, 1, 16, 16) and bool(((s > 0) & (s < 1)).all())


def test_aggregate_without_padding_rejects_consecutive_taps(predictor_path):
    hp = make_hparams("er_ace_ser_aggregate", {"modulation": "aggregate", "aggregate_padding": 0})
    with pytest.raises(ValueError, match="consecutive taps"):
        check_modulation(hp)
    check_modulation(make_hparams("er_ace_ser_aggregate", {"modulation": "aggregate", "aggregate_padding": 0,
                                                            "mnp_blocks": (1, 0, 1, 0, 1)}))
    method = make("er_ace_ser_aggregate", predictor_path)  # padding 1 runs
    method.begin_task(Task(0, (0, 1), *batch()[2:0:-1]))
    assert torch.isfinite(method.observe(*batch())["loss"])


@pytest.mark.parametrize("name", ["derpp_ser", "er_ace_ser", "derpp_ser_dwsep"])
def test_classification_never_trains_the_saliency_branch_and_vice_versa(predictor_path, name):
    method = make(name, predictor_path)
    x, y, x_raw, sal = batch()
    method.begin_task(Task(1, (2, 3), x_raw, y))
    method.buffer.add(x=x_raw, y=y, logits=torch.randn(4, 4))  # replay is active
    s, taps = method.saliency(x)
    method._stream_taps = [t.detach() for t in taps]
    method.opt.zero_grad(set_to_none=True)
    method.classify(x, stream=True).sum().backward()
    method.classify(x).sum().backward()  # a replayed batch too
    assert all(p.grad is None or not p.grad.any() for p in method.saliency.parameters())
    assert any(p.grad is not None and p.grad.any() for p in method.net.parameters())
    method.net.zero_grad(set_to_none=True)
    F.mse_loss(s, sal.float() / 255).backward()
    assert all(p.grad is None or not p.grad.any() for p in method.net.parameters())


def test_derpp_ser_stores_the_stream_logits_from_before_the_step(predictor_path):
    method = make("derpp_ser", predictor_path)
    x, y, x_raw, sal = batch()
    method.begin_task(Task(0, (0, 1), x_raw, y))
    before = copy.deepcopy(method)
    method.observe(x, y, x_raw, sal)
    # the stream taps come from S before its update, in train mode; C's logits from C before its step
    before.saliency.train()
    taps = [t.detach() for t in before.saliency(x)[1]]
    before._stream_taps = taps
    expected = before.classify(x, stream=True)
    stored = method.buffer.sample(4)  # the buffer holds exactly this batch
    order = torch.stack([torch.nonzero((x_raw == r).flatten(1).all(1))[0, 0] for r in stored["x"]])
    assert torch.allclose(stored["logits"], expected[order].detach(), atol=1e-5)


def test_buffer_passes_use_eval_mode_and_leave_saliency_statistics_alone(predictor_path):
    method = make("derpp_ser", predictor_path).train()
    x = batch()[0]
    stats = {k: v.clone() for k, v in method.saliency.state_dict().items() if "running" in k}
    modes = []
    hook = method.saliency.encoder.bn1.register_forward_pre_hook(lambda m, _: modes.append(m.training))
    method.classify(x)
    hook.remove()
    assert modes == [False] and method.saliency.training  # eval during the pass, train mode restored
    assert all(torch.equal(v, method.saliency.state_dict()[k]) for k, v in stats.items())


def test_er_ace_ser_masks_and_replays_only_after_the_first_task(predictor_path):
    method = make("er_ace_ser", predictor_path)
    x, y, x_raw, sal = batch()
    method.begin_task(Task(0, (0, 1), x_raw, y))
    first = method.observe(x, y, x_raw, sal)
    assert "replay_ce" not in first and "sal_kld" in first
    method.begin_task(Task(1, (2, 3), x_raw, y + 2))
    x2, y2, x2_raw, sal2 = batch(seed=1, labels=(2, 3))
    second = method.observe(x2, y2, x2_raw, sal2)
    assert "replay_ce" in second


def test_frozen_saliency_ablation_never_updates_the_predictor(predictor_path):
    method = make("er_ace_ser_salfrozen", predictor_path).train()
    before = copy.deepcopy(method.saliency.state_dict())
    x, y, x_raw, sal = batch()
    method.begin_task(Task(0, (0, 1), x_raw, y))
    losses = method.observe(x, y, x_raw, sal)
    assert "sal_kld" not in losses and not method.saliency.training
    assert all(torch.equal(v, method.saliency.state_dict()[k]) for k, v in before.items())


def test_ser_checkpoint_round_trip_restores_both_optimisers(predictor_path):
    method = make("derpp_ser", predictor_path)
    x, y, x_raw, sal = batch()
    method.begin_task(Task(0, (0, 1), x_raw, y))
    method.observe(x, y, x_raw, sal)
    restored = make("derpp_ser", predictor_path)
    restored.load_state_dict(method.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(method.state_dict().values(), restored.state_dict().values())
               if isinstance(a, torch.Tensor))
    assert restored.sal_opt.state_dict()["state"].keys() == method.sal_opt.state_dict()["state"].keys()
