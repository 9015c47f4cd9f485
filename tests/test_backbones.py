import torch

from clcore.backbones import build_backbone


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_resnet18_shapes_and_named_blocks():
    net = build_backbone("resnet18", (3, 32, 32), 10, nf=8)
    x = torch.randn(2, 3, 32, 32)
    stages = net.stages(x)
    assert [s.shape[1:] for s in stages] == [(8, 32, 32), (8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]
    assert net.features(x).shape == (2, 64) and net(x).shape == (2, 10)
    names = {n for n, _ in net.named_modules()}
    assert {f"layer{k}.{b}" for k in range(1, 5) for b in (0, 1)} <= names and "classifier" in names
    # nf=64 is the paper backbone: 11.2 M parameters (docs/protocol.md#cifar-resnet-18)
    assert abs(n_params(build_backbone("resnet18", (3, 32, 32), 10, nf=64)) - 11.17e6) < 0.01e6


def test_resnet32_parameter_count_and_zero_init():
    net = build_backbone("resnet32", (3, 32, 32), 100)
    assert n_params(net) - n_params(net.classifier) == 463_504  # n = 5, nf = 16 (docs/protocol.md#resnet-32)
    assert net.features(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for b in net.layer1)


def test_mlp():
    net = build_backbone("mlp", (1, 8, 8), 10)
    assert net(torch.randn(4, 1, 8, 8)).shape == (4, 10) and n_params(net) == 64 * 100 + 100 + 100 * 100 + 100 + 1010
