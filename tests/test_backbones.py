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


def test_resnet32_embedded_sizes_and_pre_activation_features():
    # AKR's embedded ResNet-8 (n 1, nf 8) on 8x8 digits and ResNet-14 (n 2, nf 8) on 32x32 shapes
    # (docs/akr.md#embedded-study)
    for in_shape, n, count in (((1, 8, 8), 1, 18_744), ((3, 32, 32), 2, 43_304)):
        net = build_backbone("resnet32", in_shape, 10, nf=8, n=n)
        assert n_params(net) - n_params(net.classifier) == count
    torch.manual_seed(0)
    relu = build_backbone("resnet32", (3, 16, 16), 10, nf=4, n=1, zero_init_residual=False)
    pre = build_backbone("resnet32", (3, 16, 16), 10, nf=4, n=1, zero_init_residual=False, last_relu=False)
    pre.load_state_dict(relu.state_dict())
    x = torch.randn(4, 3, 16, 16)
    assert (relu.features(x) >= 0).all() and (pre.features(x) < 0).any()  # last_relu: false keeps the sign


def test_resnet18_imagenet_stem():
    net = build_backbone("resnet18", (3, 224, 224), 100, nf=64, stem="imagenet")
    assert net.stages(torch.randn(1, 3, 224, 224))[-1].shape == (1, 512, 7, 7)  # 224 / 32, as torchvision's
    assert n_params(net) - n_params(net.classifier) == 11_176_512  # torchvision's resnet18 without its fc


def test_mlp():
    net = build_backbone("mlp", (1, 8, 8), 10)
    assert net(torch.randn(4, 1, 8, 8)).shape == (4, 10) and n_params(net) == 64 * 100 + 100 + 100 * 100 + 100 + 1010
