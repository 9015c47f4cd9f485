"""Batch renormalisation and the latent-split MobileNetV1 that AR1* builds on (docs/protocol.md#mobilenetv1): BRN
against batch norm and by hand, its ramp and switch, the network's sizes, latent injection, frozen lower layers and
the conversion of pytorchcv's checkpoint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clcore.backbones import build_backbone
from clcore.backbones.batch_renorm import BatchRenorm2d
from clcore.backbones.mobilenet import MobileNetV1, from_pytorchcv, parameter_split, pytorchcv_block_names


def test_brn_at_its_initial_limits_is_batch_norm_and_moves_its_statistics_by_the_momentum():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 5, 5) * 2 + 1
    brn = BatchRenorm2d(3, momentum=0.01)
    with torch.no_grad():
        brn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        brn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        brn.running_mean.copy_(torch.tensor([0.5, 1.0, -1.0]))
        brn.running_std.copy_(torch.tensor([2.0, 1.0, 3.0]))
    before_mean, before_std = brn.running_mean.clone(), brn.running_std.clone()
    y = brn(x)
    expected = F.batch_norm(x, None, None, brn.weight, brn.bias, training=True, eps=1e-5)
    assert torch.allclose(y, expected, atol=1e-6)
    mean, std = x.mean((0, 2, 3)), (x.var((0, 2, 3), unbiased=False) + 1e-5).sqrt()
    assert torch.allclose(brn.running_mean - before_mean, 0.01 * (mean - before_mean), atol=1e-7)
    assert torch.allclose(brn.running_std - before_std, 0.01 * (std - before_std), atol=1e-7)


def test_brn_clips_r_and_d_and_evaluates_with_running_statistics_without_eps():
    brn = BatchRenorm2d(1)
    brn.switch(momentum=0.0, r_max=2.0, d_max=1.0)
    with torch.no_grad():
        brn.running_std.fill_(4.0)  # μ_run = 0
    x = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1)  # μ_B = 1, σ_B ≈ 1: r = 1/4 → 1/2, d = 1/4
    y = brn(x).flatten()
    sigma = (1 + 1e-5) ** 0.5
    assert torch.allclose(y, torch.tensor([-0.5 / sigma + 0.25, 0.5 / sigma + 0.25]), atol=1e-6)
    brn.eval()
    assert torch.allclose(brn(x).flatten(), torch.tensor([0.0, 0.5]))  # (x − 0) / 4, no ε


def test_brn_ramp_reaches_its_caps_by_whole_steps_and_switch_stops_it():
    brn = BatchRenorm2d(1, r_max_cap=1.25, d_max_cap=0.5, inc_step=4.1e-5)
    x = torch.randn(128, 1, 1, 1)
    r, d = [], []
    for _ in range(100):
        brn(x)
        r.append(brn.r_max.item())
        d.append(brn.d_max.item())
    assert r[46] < 1.25 and r[47] == pytest.approx(1.251904, abs=1e-9) and r[-1] == r[47]  # 48th forward
    assert d[94] < 0.5 and d[95] == pytest.approx(0.503808, abs=1e-9) and d[-1] == d[95]  # 96th forward
    brn.switch(momentum=5e-5, r_max=1.25, d_max=0.5)
    brn(x)
    assert (brn.momentum.item(), brn.r_max.item(), brn.d_max.item(), brn.inc_step.item()) == (5e-5, 1.25, 0.5, 0.0)
    assert set(brn.state_dict()) >= {"running_mean", "running_std", "r_max", "d_max", "momentum"}


def test_brn_from_batchnorm_takes_the_trained_statistics():
    bn = torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.weight.fill_(2.0)
        bn.running_var.copy_(torch.tensor([4.0, 9.0]))
        bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
    brn = BatchRenorm2d.from_batchnorm(bn)
    assert torch.equal(brn.running_std, torch.tensor([2.0, 3.0])) and torch.equal(brn.weight, bn.weight)
    assert torch.equal(brn.running_mean, bn.running_mean)


@pytest.mark.parametrize("options, in_shape, lower, upper, latent, final", [
    ({}, (3, 128, 128), 1_081_152, 2_125_824, (512, 8, 8), (1024, 4, 4)),
    ({"width": 0.25, "init_stride": 1}, (3, 32, 32), None, None, (128, 4, 4), (256, 2, 2)),
])
def test_mobilenet_sizes(options, in_shape, lower, upper, latent, final):
    net = build_backbone("mobilenet_v1", in_shape, 50, **options)
    n_lower, n_upper = parameter_split(net)
    if lower is not None:
        assert (n_lower, n_upper) == (lower, upper) and net.classifier.weight.numel() == 51_200
    else:
        assert n_lower + n_upper == 213_072
    x = torch.randn(2, *in_shape)
    h = net.latent(x)
    assert h.shape[1:] == latent and net.upper(h).shape[1:] == final and net(x).shape == (2, 50)
    assert net.classifier.bias is None and len(net.batch_renorms()) == 27


def small_net(**options):
    torch.manual_seed(0)
    return MobileNetV1((3, 32, 32), 10, width=0.25, init_stride=1, **options)


def test_latent_injection_equals_running_the_images():
    net = small_net().eval()
    x1, x2 = torch.randn(3, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, h = net(x1, latent=net.latent(x2), return_latent=True)
        assert torch.allclose(logits, net(torch.cat([x1, x2])), atol=1e-5) and torch.equal(h, net.latent(x1))
    trained, reference = small_net().train(), small_net().train()
    with torch.no_grad():
        trained(x1, latent=reference.latent(x2))
        reference.upper(torch.cat([reference.lower(x1), reference.lower(x2)]))
    for ours, theirs in zip(trained.upper.modules(), reference.upper.modules()):
        if isinstance(ours, BatchRenorm2d):  # the upper statistics are those of the joint batch
            assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-6)


def test_frozen_lower_layers_keep_their_activations_through_training():
    net = small_net(inc_step=1e-3)
    net.freeze_lower()
    net.train()
    assert not any(p.requires_grad for p in net.lower.parameters()) and not net.lower.training and net.upper.training
    probe = torch.randn(5, 3, 32, 32)
    before = net.latent(probe).clone()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    loss = F.cross_entropy(net(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,)))
    loss.backward()
    opt.step()
    assert torch.equal(net.latent(probe), before)
    assert all(m.r_max.item() == 1.0 for m in net.lower.modules() if isinstance(m, BatchRenorm2d))  # no ramp in eval


def test_pytorchcv_checkpoint_converts_and_loads_strictly():
    net = small_net()
    reference = {k: v for k, v in net.state_dict().items()}
    state, names = {}, pytorchcv_block_names()
    assert len(names) == 27 and names[19] == "features.stage5.unit5.dw_conv"  # unit 10 of 13
    for index, prefix in enumerate(names):  # a checkpoint in pytorchcv's names, filled with recognisable values
        ours = f"lower.{index}" if index <= 19 else f"upper.{index - 20}"
        state[f"{prefix}.conv.weight"] = torch.full_like(reference[f"{ours}.conv.weight"], float(index))
        channels = reference[f"{ours}.bn.weight"].shape
        for field, value in (("weight", 1.0 + index), ("bias", -index), ("running_mean", 0.5), ("running_var", 4.0)):
            state[f"{prefix}.bn.{field}"] = torch.full(channels, float(value))
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(7)
    state["output.weight"], state["output.bias"] = torch.zeros(1000, 256), torch.zeros(1000)
    converted = from_pytorchcv(state, net)
    net.load_state_dict(converted, strict=True)
    assert torch.equal(net.upper[6].conv.weight, torch.full_like(net.upper[6].conv.weight, 26.0))
    assert torch.equal(net.lower[19].bn.running_std, torch.full_like(net.lower[19].bn.running_std, 2.0))
    with pytest.raises(KeyError, match="no block consumes"):
        from_pytorchcv({**state, "features.extra.weight": torch.zeros(1)}, net)
    with pytest.raises(KeyError, match="lacks features.init_block.conv.weight"):
        from_pytorchcv({k: v for k, v in state.items() if k != "features.init_block.conv.weight"}, net)


def test_brn_gradients_follow_its_formula_with_r_and_d_held_constant():
    """The fused forward (batch norm with weight γr and bias γd + β) back-propagates as γ((x − μ_B)/σ_B · r + d) + β
    with r and d detached, as the reference code's does."""
    torch.manual_seed(0)
    brn = BatchRenorm2d(3)
    with torch.no_grad():
        brn.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        brn.running_mean.copy_(torch.tensor([0.3, -0.2, 0.0]))
        brn.running_std.copy_(torch.tensor([0.5, 2.0, 1.2]))
        brn.r_max.fill_(1.1)
        brn.d_max.fill_(0.2)
    x = torch.randn(6, 3, 4, 4, requires_grad=True)
    probe = torch.randn(6, 3, 4, 4)
    (brn(x) * probe).sum().backward()
    grads = [t.grad.clone() for t in (x, brn.weight, brn.bias)]
    x_ref = x.detach().clone().requires_grad_(True)
    w, b = brn.weight.detach().clone().requires_grad_(True), brn.bias.detach().clone().requires_grad_(True)
    mean, std = x_ref.mean((0, 2, 3)), (x_ref.var((0, 2, 3), unbiased=False) + 1e-5).sqrt()
    run_mean, run_std = torch.tensor([0.3, -0.2, 0.0]), torch.tensor([0.5, 2.0, 1.2])
    r = (std / run_std).clamp(1 / 1.1, 1.1).detach()
    d = ((mean - run_mean) / run_std).clamp(-0.2, 0.2).detach()
    view = (1, -1, 1, 1)
    y = w.view(view) * ((x_ref - mean.view(view)) / std.view(view) * r.view(view) + d.view(view)) + b.view(view)
    (y * probe).sum().backward()
    for ours, ref in zip(grads, (x_ref.grad, w.grad, b.grad)):
        assert torch.allclose(ours, ref, atol=1e-5)
