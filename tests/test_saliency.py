"""SER saliency predictor S, its metrics and pretraining (docs/ser.md#unit-checks)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from clcore import data
from clcore.augment import Transform
from clcore.backbones.resnet import ResNet18
from clcore.data.prepared import write_prepared
from clcore.methods.ser.pretraining import joint_hflip, pretrain_saliency, run_pretraining, write_pseudo_maps
from clcore.methods.ser.saliency import (EPS, CheckpointKeyError, InvertedResidual, SaliencyPredictor, cc,
                                         center_bias_map, external_key_map, kld_loss, kld_per_sample,
                                         load_external_checkpoint, load_predictor, reference_baselines,
                                         saliency_metrics, saliency_optimizer, save_predictor, sim, target_distribution)

S_HAND = torch.tensor([[0.2, 0.4], [0.6, 0.8]])[None, None]
T_HAND = torch.tensor([[0.0, 0.0], [1.0, 1.0]])[None, None]


def test_metric_hand_values():
    # KLD (docs/ser.md#metrics) of p = (.1,.2,.3,.4), q = (0,0,.5,.5)
    assert kld_loss(S_HAND, T_HAND).item() == pytest.approx(0.5 * math.log(5 / 3) + 0.5 * math.log(1.25), abs=1e-6)
    assert kld_loss(S_HAND, T_HAND).item() == pytest.approx(0.366985, abs=1e-5)
    assert cc(S_HAND, T_HAND).item() == pytest.approx(0.894427, abs=1e-5)
    assert sim(S_HAND, T_HAND).item() == pytest.approx(0.833333, abs=1e-5)
    assert kld_loss(S_HAND, S_HAND).item() == pytest.approx(0.0, abs=1e-7)
    assert cc(S_HAND, S_HAND).item() == pytest.approx(1.0, abs=1e-6)
    assert sim(S_HAND, S_HAND).item() == pytest.approx(1.0, abs=1e-6)
    # a uint8 target gives the same numbers (KLD re-normalises, CC and SIM are scale-free)
    t8 = (T_HAND * 255).to(torch.uint8)
    assert kld_loss(S_HAND, target_distribution(t8)).item() == pytest.approx(0.366985, abs=1e-5)


def test_metrics_per_sample_and_batch_mean():
    s = torch.cat([S_HAND, S_HAND]); t = torch.cat([T_HAND, S_HAND])
    assert kld_per_sample(s, t).tolist() == pytest.approx([0.366985, 0.0], abs=1e-5)
    assert kld_loss(s, t).item() == pytest.approx(0.366985 / 2, abs=1e-5)
    assert cc(s, t).shape == (2,) and sim(s, t).tolist() == pytest.approx([0.833333, 1.0], abs=1e-5)


def test_kld_epsilon_is_literal_and_fp32():
    # p = 0 where q > 0: no clamping, the epsilon alone bounds the term (docs/ser.md#kld-epsilon)
    s, t = torch.tensor([[[[0.0, 1.0]]]]), torch.tensor([[[[1.0, 1.0]]]])
    expected = 0.5 * math.log(0.5 / EPS) + 0.5 * math.log(0.5)
    assert kld_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, low = kld_per_sample(S_HAND, T_HAND), kld_per_sample(S_HAND.bfloat16(), T_HAND.bfloat16())
    assert out.dtype == low.dtype == torch.float32 and out.item() == pytest.approx(0.366985, abs=1e-6)
    assert low.item() == pytest.approx(0.366985, abs=1e-3)  # only the bf16 rounding of the inputs


def test_constant_maps_do_not_divide_by_zero():
    flat, zero = torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, 1, 2, 2)
    assert cc(flat, T_HAND).item() == 0.0
    # a constant map is left as is, then sum-normalised to uniform: SIM = sum min(.25, (0,0,.5,.5)) = .5
    assert sim(flat, T_HAND).item() == pytest.approx(0.5)
    assert sim(zero, T_HAND).item() == 0.0


def test_target_distribution():
    t = target_distribution(torch.tensor([[[[0, 51], [102, 255]]]], dtype=torch.uint8))
    assert t.dtype == torch.float32 and t.sum().item() == pytest.approx(1.0)
    assert t.flatten().tolist() == pytest.approx([0, 51 / 408, 102 / 408, 255 / 408])
    neg = target_distribution(torch.tensor([[[[-1.0, 1.0]]]]))  # shifted to (0, 2), then normalised
    assert neg.flatten().tolist() == pytest.approx([0.0, 1.0])


def test_center_bias_map():
    m = center_bias_map(9, 13)
    assert m.shape == (1, 1, 9, 13) and m[0, 0, 4, 6].item() == 1.0
    assert torch.equal(m, m.flip(-1)) and torch.equal(m, m.flip(-2))
    sigma = 0.25 * 9
    assert m[0, 0, 4, 6 + 2].item() == pytest.approx(math.exp(-4 / (2 * sigma**2)), rel=1e-6)


@pytest.mark.parametrize("hw", [(32, 32), (288, 384)])
def test_tap_and_output_shapes_match_classifier(hw):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw)
    pred = SaliencyPredictor((3, *hw), nf=4, widths=(16, 8, 4)).eval()
    clf = ResNet18((3, *hw), n_classes=10, nf=4)
    with torch.no_grad():
        s, q = pred(x)
        p, _ = clf.forward_taps(x)
    assert [t.shape for t in q] == [t.shape for t in p] and len(q) == ResNet18.N_TAPS
    assert q[4].shape == (2, 32, hw[0] // 8, hw[1] // 8)
    assert s.shape == (2, 1, *hw) and bool(((s > 0) & (s < 1)).all())
    assert (q[0] < 0).any()  # pre-ReLU taps


def test_decoder_structure():
    pred = SaliencyPredictor((3, 32, 32), nf=4)
    bns = [m for m in pred.decoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 12  # post_cnn 2, skips 2 x 2, expand-2 inverted residuals 2 x 3
    assert all(m.momentum == 0.01 for m in bns)
    assert all(m.momentum == 0.1 for m in pred.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    assert not any("classifier" in k for k in pred.state_dict())  # the unused head holds no parameters
    assert pred.config == {"in_shape": [3, 32, 32], "nf": 4, "widths": [256, 128, 64], "dropout": 0.6}
    d = pred.decoder
    assert [m.p for m in d.modules() if isinstance(m, nn.Dropout2d)] == [0.6, 0.6]
    assert d.skip_2x.expansion[0].weight.shape == (32, 16, 1, 1)  # Q3: c3 = 4 nf -> 2 c3
    assert d.skip_2x.reduction[0].weight.shape == (128, 32, 1, 1)  # -> d2
    assert d.skip_4x.expansion[0].weight.shape == (16, 8, 1, 1) and d.skip_4x.reduction[0].bias is not None
    assert d.adaptation[0].weight.shape == (1, 64, 1, 1) and d.adaptation[0].bias is not None


def test_inverted_residual():
    e1, e2 = InvertedResidual(32, 16, 1), InvertedResidual(24, 8, 2)
    convs1 = [m for m in e1.conv if isinstance(m, nn.Conv2d)]
    convs2 = [m for m in e2.conv if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.groups, c.kernel_size) for c in convs1] == [
        (32, 32, 32, (3, 3)), (32, 16, 1, (1, 1))]
    assert [(c.in_channels, c.out_channels, c.groups) for c in convs2] == [(24, 48, 1), (48, 48, 48), (48, 8, 1)]
    assert sum(isinstance(m, nn.ReLU6) for m in e2.conv) == 2 and isinstance(e2.conv[-1], nn.BatchNorm2d)
    assert not e1.residual and not e2.residual and InvertedResidual(8, 8, 2).residual  # MobileNetV2's rule
    torch.manual_seed(0)
    big = InvertedResidual(64, 64, 2)  # He-normal fan-out: std sqrt(2 / fan_out) = sqrt(2 / 128) for the 1x1
    assert big.conv[0].weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.05)


def test_optimizer_groups():
    pred = SaliencyPredictor((3, 32, 32), nf=4)
    opt = saliency_optimizer(pred)
    dec, enc = opt.param_groups
    assert (dec["lr"], dec["weight_decay"], dec["momentum"]) == (0.005, 1e-4, 0.9)
    assert enc["lr"] == pytest.approx(0.0005) and (enc["weight_decay"], enc["momentum"]) == (1e-5, 0.9)
    assert {id(p) for p in dec["params"]} == {id(p) for p in pred.decoder.parameters()}
    assert {id(p) for p in enc["params"]} == {id(p) for p in pred.encoder.parameters()}
    assert len(dec["params"]) + len(enc["params"]) == len(list(pred.parameters()))
    opt = saliency_optimizer(pred, lr=0.04, cnn_lr_factor=0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.04, 0.004])


def _trained_like(seed):
    torch.manual_seed(seed)
    pred = SaliencyPredictor((3, 16, 16), nf=4, widths=(8, 8, 4))
    with torch.no_grad():  # non-trivial running stats, so a BN-buffer mix-up would show
        for m in pred.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1); m.running_var.uniform_(0.5, 1.5); m.weight.uniform_(0.5, 1.5)
    return pred.eval()


def test_external_checkpoint_loads_upstream_layout(tmp_path):
    source, target = _trained_like(0), _trained_like(1)
    mapping = external_key_map(source)
    upstream = {mapping[k]: v.clone() for k, v in source.state_dict().items()}
    assert "cnn.layer4.1.bn2.running_var" in upstream and "adaptation_imagenet100.0.bias" in upstream
    assert "skip_2x.reduction.1.bn_Imagenet100.weight" in upstream and "post_cnn.inv_res.conv.1.weight" in upstream
    extras = {"coarse_gaussians_imagenet100": torch.zeros(16, 2, 2), "cnn.classifier.weight": torch.zeros(1, 32)}
    path = tmp_path / "chkpt_saliency_predictor.pth"
    torch.save({"model_state_dict": {**upstream, **extras}, "epoch": 7}, path)
    info = load_external_checkpoint(target, path)
    assert info == {"loaded": len(source.state_dict()), "dropped": sorted(extras)}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        (s0, q0), (s1, q1) = source(x), target(x)
    assert torch.equal(s0, s1) and all(torch.equal(a, b) for a, b in zip(q0, q1))


def test_external_checkpoint_missing_key_fails_loudly():
    source, target = _trained_like(0), _trained_like(1)
    upstream = {v: source.state_dict()[k] for k, v in external_key_map(source).items()}
    del upstream["upsampling_2.inv_res.conv.4.bn_Imagenet100.running_mean"]
    before = {k: v.clone() for k, v in target.state_dict().items()}
    missing = r"upsampling_2\.inv_res\.conv\.4\.bn_Imagenet100\.running_mean"
    with pytest.raises(CheckpointKeyError, match=r"lacks 1 of \d+ keys.*" + missing):
        load_external_checkpoint(target, {"model_state_dict": upstream})
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())  # nothing half-loaded


def test_save_and_load_predictor(tmp_path):
    pred = _trained_like(3)
    save_predictor(tmp_path / "s.pt", pred, {"best_epoch": 4, "note": "x"})
    back = load_predictor(tmp_path / "s.pt")
    assert not back.training and back.extra == {"best_epoch": 4, "note": "x"} and back.config == pred.config
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(pred(x)[0], back(x)[0])
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary left behind


def test_joint_hflip_flips_the_same_samples():
    x = torch.arange(4 * 3 * 2 * 5, dtype=torch.uint8).view(4, 3, 2, 5)
    sal = torch.arange(4 * 1 * 2 * 5, dtype=torch.uint8).view(4, 1, 2, 5) + 100
    flips = torch.tensor([True, False, False, True])
    fx, fs = joint_hflip(x, sal, flips)
    for i, f in enumerate(flips.tolist()):
        assert torch.equal(fx[i], x[i].flip(-1) if f else x[i])
        assert torch.equal(fs[i], sal[i].flip(-1) if f else sal[i])


def _blob_data(n, seed, size=16):
    """Dim noisy images with a bright 4x4 square; the map is a Gaussian blob on the square."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, size, size, generator=g) * 80).to(torch.uint8)
    r, c = torch.randint(2, size - 6, (n,), generator=g), torch.randint(2, size - 6, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    sal = torch.empty(n, 1, size, size, dtype=torch.uint8)
    for i in range(n):
        x[i, :, r[i]:r[i] + 4, c[i]:c[i] + 4] = 255
        d2 = (yy - (r[i] + 1.5)) ** 2 + (xx - (c[i] + 1.5)) ** 2
        sal[i, 0] = (255 * torch.exp(-d2 / (2 * 2.0**2))).round().to(torch.uint8)
    return x, sal


TRANSFORM = Transform(pixel_max=255, mean=torch.full((3,), 0.3), std=torch.full((3,), 0.3))


def test_pretrain_saliency_learns():
    (tx, ts), (vx, vs) = _blob_data(128, 0), _blob_data(48, 1)
    pred, rows = pretrain_saliency(tx, ts, vx, vs, TRANSFORM, (3, 16, 16), nf=4, widths=(16, 8, 8), epochs=8,
                                   batch_size=16, seed=0, log=lambda msg: None)
    epochs = [r for r in rows if r["baseline"] is None]
    base = {r["baseline"]: r for r in rows if r["baseline"]}
    assert [r["epoch"] for r in epochs] == list(range(1, 9)) and set(base) == {"uniform", "center_bias"}
    assert all(r["epoch"] == -1 and math.isnan(r["train_loss"]) for r in base.values())
    assert [r["lr"] for r in epochs] == pytest.approx([0.04 * 0.99**k for k in range(8)])  # ExponentialLR per epoch
    assert [r["cnn_lr"] for r in epochs] == pytest.approx([0.004 * 0.99**k for k in range(8)])
    best = min(epochs, key=lambda r: r["val_kld"])
    assert [r["best"] for r in epochs] == [r is best for r in epochs]
    assert epochs[-1]["train_loss"] < 0.5 * epochs[0]["train_loss"]
    assert best["val_kld"] < 0.7 * base["uniform"]["val_kld"]  # >= 30 % below uniform (docs/ser.md#expected-behaviour)
    assert best["val_sim"] > base["center_bias"]["val_sim"] + 0.1
    assert base["uniform"]["val_kld"] == pytest.approx(reference_baselines(vs)["uniform"]["kld"])
    assert not pred.training
    assert saliency_metrics(pred, vx, vs, TRANSFORM)["kld"] == pytest.approx(best["val_kld"], rel=1e-5)


def test_pretrain_saliency_keeps_lowest_val_kld_epoch(monkeypatch):
    import clcore.methods.ser.pretraining as sal

    scripted, states = iter([0.9, 0.5, 0.7, 0.6]), []

    def fake_metrics(predictor, *args):
        states.append({k: v.clone() for k, v in predictor.state_dict().items()})
        return {"kld": next(scripted), "cc": 0.0, "sim": 0.0}

    monkeypatch.setattr(sal, "saliency_metrics", fake_metrics)
    (tx, ts), (vx, vs) = _blob_data(16, 0), _blob_data(8, 1)
    pred, rows = pretrain_saliency(tx, ts, vx, vs, TRANSFORM, (3, 16, 16), nf=4, widths=(8, 8, 4), epochs=4,
                                   batch_size=8, seed=0, log=lambda msg: None)
    assert [r["best"] for r in rows if r["baseline"] is None] == [False, True, False, False]
    final = pred.state_dict()
    assert all(torch.equal(final[k], v) for k, v in states[1].items())
    assert not all(torch.equal(final[k], v) for k, v in states[3].items())


def test_pretrain_saliency_is_seeded():
    (tx, ts), (vx, vs) = _blob_data(32, 0), _blob_data(16, 1)
    kw = dict(nf=4, widths=(8, 8, 4), epochs=1, batch_size=8, loss="kld_cc", log=lambda msg: None)
    runs = [pretrain_saliency(tx, ts, vx, vs, TRANSFORM, (3, 16, 16), seed=s, **kw)[1][0] for s in (0, 0, 1)]
    assert runs[0]["val_kld"] == runs[1]["val_kld"] and runs[0]["val_kld"] != runs[2]["val_kld"]
    with pytest.raises(ValueError, match="kld_cc"):
        pretrain_saliency(tx, ts, vx, vs, TRANSFORM, (3, 16, 16), **{**kw, "loss": "cc"})


def test_run_pretraining_writes_outputs(tmp_path):
    (tx, ts), (vx, vs) = _blob_data(32, 0), _blob_data(16, 1)
    splits = {"aux_train": {"x": tx.numpy(), "sal": ts.numpy(), "y": np.zeros(32, np.int16)},
              "aux_test": {"x": vx.numpy(), "sal": vs.numpy(), "y": np.zeros(16, np.int16)}}
    write_prepared(tmp_path / "prepared" / "blobs", "blobs", splits, {"pixel_max": 255})
    summary = run_pretraining("blobs", "aux_train", "aux_test", tmp_path / "prepared", tmp_path / "out", nf=4,
                              widths=(8, 8, 4), epochs=2, batch_size=8, seed=0, device="cpu", log=lambda m: None)
    table = pd.read_parquet(tmp_path / "out" / "pretrain_metrics.parquet")
    assert len(table) == 4 and table["best"].sum() == 1
    best = table[table["best"]].iloc[0]
    assert summary["best_epoch"] == best["epoch"] and summary["val_kld"] == pytest.approx(best["val_kld"])
    assert set(summary["baselines"]) == {"uniform", "center_bias"}
    pred = load_predictor(tmp_path / "out" / "saliency_predictor.pt")
    assert pred.config["nf"] == 4 and pred.extra["summary"]["best_epoch"] == summary["best_epoch"]
    norm = data.metadata("blobs", tmp_path / "prepared")["normalization_computed"]
    transform = Transform(pixel_max=255, mean=torch.tensor(norm["mean"]), std=torch.tensor(norm["std"]))
    assert saliency_metrics(pred, vx, vs, transform)["kld"] == pytest.approx(summary["val_kld"], rel=1e-5)


def test_pseudo_maps_are_the_predictors_maps_under_its_pretraining_normalisation(tmp_path):
    (tx, ts), (vx, vs) = _blob_data(16, 0), _blob_data(8, 1)
    splits = {"train": {"x": tx.numpy(), "sal": ts.numpy(), "y": np.zeros(16, np.int16)},
              "test": {"x": vx.numpy(), "sal": vs.numpy(), "y": np.zeros(8, np.int16)}}
    write_prepared(tmp_path / "prepared" / "blobs", "blobs", splits, {"pixel_max": 255})
    norm = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}  # not the dataset's statistics
    torch.manual_seed(0)
    save_predictor(tmp_path / "s.pt", SaliencyPredictor((3, 16, 16), nf=4, widths=(8, 8, 4)), {"normalization": norm})
    record = write_pseudo_maps(tmp_path / "s.pt", "blobs", tmp_path / "prepared", tmp_path / "pseudo")
    maps = np.load(tmp_path / "pseudo" / "test.sal.npy")
    predictor = load_predictor(tmp_path / "s.pt")
    transform = Transform(pixel_max=255, mean=torch.tensor(norm["mean"]), std=torch.tensor(norm["std"]))
    with torch.no_grad():
        expected = torch.round(255 * predictor(transform.test(vx))[0]).to(torch.uint8).numpy()
    assert maps.dtype == np.uint8 and maps.shape == (8, 1, 16, 16) and np.array_equal(maps, expected)
    assert sorted(record["files"]) == ["test.sal.npy", "train.sal.npy"]
    assert not list((tmp_path / "pseudo").glob("*.staged"))
