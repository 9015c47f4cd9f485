"""Fidelity corrections (docs/baselines.md#upstream-quirks): each reproduces upstream by default behind a named
option, checked against the upstream rule by hand, and the blocks it affects resolve to the source's behaviour."""

import pytest
import torch

from clcore.augment import Transform
from clcore.backbones import CosineLinear
from clcore.hparams import make_hparams, resolve
from clcore.methods import get_method
from clcore.methods.base import Context
from clcore.scenarios import Scenario, get_benchmark
from clcore.train import build_method, evaluate
from helpers import in_second_task
from test_losses import Identity2, make


def digits_method(prepared_dir, method, **overrides):
    values = resolve(method, "seq-digits", 0, {"n_epochs": 1, **overrides})
    scenario = Scenario(get_benchmark("seq-digits"), prepared_dir)
    torch.manual_seed(0)
    return build_method(get_method(method)[0], make_hparams(method, values), scenario, 0, 0), scenario


@pytest.mark.parametrize("distill_input", ["unnormalised", "normalised"])
def test_lwf_targets_come_from_the_unnormalised_image_as_upstream(prepared_dir, distill_input):
    """Mammoth's LwF records the old logits on `not_aug_inputs`, the [0, 1] tensor of ToTensor(): for the
    digits, x / 16 (pixel_max), not the normalised (x / 16 − mean) / std the network trains on."""
    model, scenario = digits_method(prepared_dir, "lwf", distill_input=distill_input)
    task = in_second_task(model, scenario)
    upstream = task.x.float() / 16.0
    with torch.no_grad():
        model.net.eval()
        expected = model.net(upstream if distill_input == "unnormalised" else scenario.transform.test(task.x))
        other = model.net(scenario.transform.test(task.x) if distill_input == "unnormalised" else upstream)
    assert torch.equal(task.fields["old_logits"], expected)
    assert not torch.allclose(task.fields["old_logits"], other)


def test_weight_decay_forms_give_the_same_step():
    """wd_reg λ as the loss term λΣθ² (the DER release) or as the optimiser's weight decay 2λ: one SGD step
    from the same weights lands on the same weights; only the loss form logs the term."""
    x, y = torch.tensor([[[[2.0]], [[1.0]]]]), torch.tensor([0])
    steps = {}
    for form in ("loss", "optimizer"):
        m = make("lwf_mc", lr=0.1, wd_reg=0.05, wd_form=form)
        losses = m.observe(x, y, x)
        steps[form] = m.net.classifier.weight.detach().clone()
        assert m.opt.param_groups[0]["weight_decay"] == pytest.approx(0.1 if form == "optimizer" else 0.0)
        if form == "loss":  # λ Σθ² of the identity head before the step: 0.05 · 2
            assert losses["wd"].item() == pytest.approx(0.1)
        else:
            assert "wd" not in losses
    assert torch.allclose(steps["loss"], steps["optimizer"], atol=1e-7)


def test_class_il_rows_choose_among_the_protocols_classes(prepared_dir):
    """After task 1, a sample of task i is scored among the classes of tasks 1..max(1, i+1) (`seen`) or among all
    ten (`all`, the DER release, SER, WSCL). Scores here put class 9 above the true class."""
    scenario = Scenario(get_benchmark("seq-digits"), prepared_dir)

    class Fixed(torch.nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.hp = make_hparams("sgd", {"class_il_rows": rows})

        def predict(self, x):
            scores = torch.zeros(x.shape[0], 10)
            scores[:, 9] = 2.0
            return scores.scatter(1, self.labels[:, None], 1.0)

    results = {}
    for rows in ("seen", "all"):
        model = Fixed(rows)
        model.labels = scenario.test_y
        results[rows] = evaluate(model, scenario, after_task=0)["class_il"]
    nines = 100 * (scenario.test_y[scenario.class_task[scenario.test_y] == 4] == 9).float().mean().item()
    assert results["seen"][:4] == [100.0] * 4 and results["seen"][4] == pytest.approx(nines)
    assert results["all"][:4] == [0.0] * 4 and results["all"][4] == pytest.approx(nines)


def test_blocks_follow_their_sources():
    assert resolve("derpp", "seq-cifar10", 200)["class_il_rows"] == "all"        # DER release
    assert resolve("derpp_ser", "seq-fgimagenet", 2000)["class_il_rows"] == "all"  # SER
    assert resolve("derpp", "seq-shapes-ser", 100)["class_il_rows"] == "all"     # its embedded analogue
    assert resolve("bir", "seq-mnist", 0)["class_il_rows"] == "seen"             # BI-R
    assert resolve("er_ace", "seq-cifar10-online", 1000)["class_il_rows"] == "seen"  # current Mammoth
    icarl = resolve("icarl", "seq-cifar10", 200)
    assert (icarl["wd_reg"], icarl["wd_form"], icarl["optim_wd"]) == (1e-5, "loss", 0.0)
    assert resolve("lwf", "seq-cifar10", 0)["distill_input"] == "unnormalised"
    online = resolve("er_ace", "seq-cifar10-online", 1000)
    assert online["classifier"] == "cosine"  # both sources of the online block
    model = get_method("er_ace")[0]
    net = Identity2()
    net.feature_dim = 2
    ctx = Context(n_classes=2, task_classes=[(0,), (1,)], transform=Transform(1.0, torch.zeros(2), torch.ones(2)),
                  device=torch.device("cpu"), seed=0, buffer_size=10, make_net=Identity2)
    assert isinstance(model(net, make_hparams("er_ace", online), ctx).net.classifier, CosineLinear)
