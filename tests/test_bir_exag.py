"""BI-R exaggeration variants (docs/bir.md#tested-invariants): hand-computed loss values and update invariants."""

import copy
import math

import pytest
import torch

from clcore.methods.bir import exaggeration as ex


def close(value, expected, rel=1e-6):
    assert float(torch.as_tensor(value).detach()) == pytest.approx(expected, rel=rel)


def gaussians_1d():
    t = torch.tensor
    return t([[0.0]]), t([[0.0]]), t([[1.0]]), t([[0.0]])


def gaussians_2d():
    t = torch.tensor
    return t([[0.0, 0.0]]), t([[0.0, math.log(4)]]), t([[1.0, 0.0]]), t([[0.0, 0.0]])


# -- divergences and L_drep --------------------------------------------------------------------------------
@pytest.mark.parametrize("pair, divergence, value, term", [
    (gaussians_1d, "kl", 0.5, 2.0), (gaussians_1d, "js", 0.4034264, 2.4787668),
    (gaussians_2d, "kl", 1.3068528, 0.7651971), (gaussians_2d, "js", 0.6684246, 1.4960551),
])
def test_divergence_and_repulsion_term(pair, divergence, value, term):
    mu1, lv1, mu2, lv2 = pair()
    close(ex.DIVERGENCES[divergence](mu1, lv1, mu2, lv2)[0], value)
    close(ex.distribution_repulsion(mu1, lv1, mu2, lv2, torch.tensor([True]), divergence), term)


def test_js_is_symmetric_and_not_zero_on_equal_gaussians():
    """m = N(μ, σ²/2) for q1 = q2 = N(μ, σ²): JS* = Σ_d ½ (1 − ln 2), the "law of the average" quirk."""
    mu1, lv1, mu2, lv2 = gaussians_2d()
    close(ex.gaussian_js(mu2, lv2, mu1, lv1)[0], 0.6684246)
    close(ex.gaussian_js(mu1, lv1, mu1, lv1)[0], 2 * 0.5 * (1 - math.log(2)))


def test_repulsion_mean_over_mask_and_empty_mask():
    mu1, lv1, mu2, lv2 = (torch.cat([t, t]) for t in gaussians_1d())
    mu2 = torch.tensor([[1.0], [0.0]])  # second row: identical Gaussians, D = 0, masked out
    close(ex.distribution_repulsion(mu1, lv1, mu2, lv2, torch.tensor([True, False]), "kl"), 2.0)
    empty = ex.distribution_repulsion(mu1.requires_grad_(), lv1, mu2, lv2, torch.tensor([False, False]), "kl")
    assert float(empty.detach()) == 0.0
    empty.backward()
    assert torch.equal(mu1.grad, torch.zeros_like(mu1))


def test_similarity_factor():
    scores = torch.tensor([[0.0, math.log(3)]])  # p = (0.25, 0.75): a = 1, b = 0
    own, comp = ex.competitors(scores)
    s = (0.25 + 1e-3) / 0.75
    close(ex.similarity_factor(scores, own, comp, torch.tensor([True])), 1e4 * s * s)


# -- competitors, ambiguity filter, representatives ---------------------------------------------------------
def test_competitors_and_ambiguity_filter():
    scores = torch.tensor([[0.0, 3.0, 1.0], [2.0, 2.0 - math.log(10), -5.0], [0.0, 0.0, math.log(30)]])
    own, comp = ex.competitors(scores)
    assert own.tolist() == [1, 0, 2] and comp.tolist() == [2, 1, 0]
    # p(a)/p(b): e² ≈ 7.39, 10, 30 against f = 20
    assert ex.ambiguous(scores, own, comp, 20.0).tolist() == [True, True, False]
    assert ex.ambiguous(scores, own, comp, 5.0).tolist() == [False, False, False]


def test_representatives_are_uniform_members():
    own = torch.tensor([2, 0, 2, 2, 0, 3])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([ex.representatives(own, 5, g) for _ in range(3000)])
    assert (draws[:, 1] == -1).all() and (draws[:, 4] == -1).all()
    for c in (0, 2, 3):
        members = (own == c).nonzero()[:, 0]
        assert torch.isin(draws[:, c], members).all()
        freq = torch.stack([(draws[:, c] == m).float().mean() for m in members])
        assert torch.allclose(freq, torch.full_like(freq, 1 / len(members)), atol=0.04)


def test_partner_classes_matched_and_fallback():
    own, comp = torch.tensor([0, 0, 1, 1, 3]), torch.tensor([1, 2, 0, 3, 2])
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        partner, matched = ex.partner_classes(own, comp, 4, g)
        assert matched.tolist() == [True, False, True, True, False]
        assert partner[matched].tolist() == comp[matched].tolist()
        assert partner[1] in (1, 3) and partner[4] in (0, 1)  # present classes other than a_i
    # a single present class: the fallback is the own class
    partner, matched = ex.partner_classes(torch.tensor([2, 2]), torch.tensor([0, 1]), 3, g)
    assert partner.tolist() == [2, 2] and not matched.any()


# -- reconstruction repulsion / attraction -----------------------------------------------------------------
def test_recon_repulsion_attraction_class_averaged():
    x, x_hat = torch.tensor([[0.0], [2.0], [4.0]]), torch.tensor([[1.0], [1.0], [3.0]])
    own, comp = torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0])
    tgt_rep, tgt_atr = ex.recon_targets(x, own, comp, 2, averaging=True)
    close(ex.recon_repulsion(tgt_rep, x_hat, torch.ones(3, dtype=torch.bool)), 0.3148148)
    close(ex.recon_attraction(tgt_atr, x_hat), 0.1666667)


def test_recon_targets_without_averaging_and_without_gradient():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], requires_grad=True)
    own, comp = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 0])
    rep = torch.tensor([1, 2, -1])
    tgt_rep, tgt_atr = ex.recon_targets(x, own, comp, 3, averaging=False, rep=rep)
    assert tgt_rep[[0, 2]].tolist() == [[4.0, 5.0], [2.0, 3.0]] and tgt_atr.tolist() == [[2, 3], [2, 3], [4, 5]]
    assert not tgt_rep.requires_grad and not tgt_atr.requires_grad
    x_hat = torch.zeros(3, 2, requires_grad=True)
    loss = ex.recon_repulsion(tgt_rep, x_hat, torch.tensor([True, False, True]))  # row 1 unmatched (class 2 absent)
    close(loss, (1 / 10.25 + 1 / 3.25) / 2)
    loss.backward()
    assert torch.isfinite(x_hat.grad).all() and (x_hat.grad[1] == 0).all()


# -- SupCon ------------------------------------------------------------------------------------------------
SUPCON_ROWS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("tau, expected", [(1.0, 7.8777816), (0.5, 1.7110340)])
def test_supcon_hard(tau, expected):
    w = ex.supcon_weights(torch.tensor([[3.0, 1.0], [0.0, 2.0]]), soft=False)  # ŷ = (0, 1)
    close(ex.supcon(SUPCON_ROWS, w, tau), expected)


def test_supcon_soft_raw_scores():
    w = ex.supcon_weights(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), soft=True)
    assert w[:2, :2].tolist() == [[4.0, 2.0], [2.0, 2.0]] and torch.equal(w[2:, :2], w[:2, :2])
    close(ex.supcon(SUPCON_ROWS, w, 1.0), 16.2111150)


def test_projection_head_dropout_always_active():
    head = ex.ProjectionHead(6, 4).eval()
    e = torch.ones(3, 6)
    g = torch.Generator().manual_seed(0)
    f1, f2 = head(e, g), head(e, g)
    assert torch.allclose(f1.norm(dim=1), torch.ones(3)) and not torch.equal(f1, f2)
    g.manual_seed(0)
    assert torch.equal(head(e, g), f1)


# -- view-2 augmentation -----------------------------------------------------------------------------------
def test_view_augment_shapes_range_and_determinism():
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 3 + 1
    g = torch.Generator().manual_seed(0)
    out = ex.view_augment(x, g, crop=False)
    assert out.shape == x.shape
    # every operation permutes or mixes values inside the sample's [min, max]; the range is restored
    assert (out.amin((1, 2, 3)) >= x.amin((1, 2, 3)) - 1e-5).all()
    assert (out.amax((1, 2, 3)) <= x.amax((1, 2, 3)) + 1e-5).all()
    cropped = ex.view_augment(x, g, crop=True)
    assert cropped.shape == (64, 3, 24, 24)
    g.manual_seed(0)
    assert torch.equal(ex.view_augment(x, g, crop=False), out)


def test_view_augment_operations():
    """Each output sample is grayscale or a channel permutation of a (flipped) crop; coins at their rates."""
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)  # channel j of sample i: 16(3i+j)+...
    g = torch.Generator().manual_seed(3)
    gray, permuted, flipped = 0, 0, 0
    for _ in range(400):
        out = ex.view_augment(x, g, crop=True, crop_size=2)
        for i, o in enumerate(out):
            if torch.allclose(o[0], o[1]) and torch.allclose(o[1], o[2]):
                gray += 1
                continue
            chans = [round(float(o[k].min()) / 16 - 0.3) - 3 * i for k in range(3)]
            assert sorted(chans) == [0, 1, 2]
            permuted += chans != [0, 1, 2]
            flipped += bool(o[0, 0, 0] > o[0, 0, 1])
    assert abs(gray / 800 - 0.25) < 0.05
    assert abs(permuted / (800 - gray) - 0.75 * 5 / 6) < 0.06  # a random permutation is the identity 1 time in 6
    assert abs(flipped / (800 - gray) - 0.5) < 0.06


# -- the method on seq-shapes (conv features, internal replay) ---------------------------------------------
from clcore import data  # noqa: E402
from clcore.hparams import make_hparams  # noqa: E402
from clcore.methods import get_method  # noqa: E402
from clcore.methods.bir.exaggeration import EXAG_PRESETS  # noqa: E402
from clcore.scenarios import Scenario, get_benchmark  # noqa: E402
from clcore.train import build_method, evaluate  # noqa: E402
from helpers import in_second_task  # noqa: E402

# bir_si's registry preset on a tiny seq-shapes protocol: scratch conv (no pretrained file), c0 4, fc 32, z 8
TINY = dict(scenario="class", iters=20, batch_size=16, lr=1e-3, fc_units=32, fc_layers=3, z_dim=8, recon_loss="mse",
            conv="scratch", c0=4)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    data.prepare("shapes", root)
    return Scenario(get_benchmark("seq-shapes"), root, "cpu")


def build(scenario, name, **overrides):
    cls, defaults = get_method(name)
    hp = make_hparams(name, {**defaults, **TINY, **overrides})
    torch.manual_seed(0)
    return build_method(cls, hp, scenario, seed=0, buffer_size=0)


def run_two_tasks(scenario, name, **overrides):
    """Loss rows (name -> per-task mean) and accuracy rows of a 2-task run."""
    method, losses, accuracy = build(scenario, name, **overrides), {}, []
    for t in range(2):
        task = scenario.task(t)
        method.begin_task(task)
        for row in method.train_task(task):
            losses[(row["metric"], t)] = row["value"]
        method.end_task(task)
        accuracy.append(evaluate(method, scenario, t))
    return method, losses, accuracy


def at_second_task(scenario, name, **overrides):
    """A method after task 1 (20 iterations), in task 2, with one replay batch and the model's pass on it."""
    method = build(scenario, name, **overrides)
    in_second_task(method, scenario)
    rows = method.rows(scenario.task(1).x[:16])
    (rep,) = method.replay(rows, None)
    return method, rep, method.forward_pass(method.net, rep.x, rep.gate)


def test_registry_reuses_bir_si_defaults():
    _, bir_si = get_method("bir_si")
    for name, flags in EXAG_PRESETS.items():
        cls, defaults = get_method(name)
        assert defaults == {**bir_si, **flags} and cls.__name__ == "ExaggeratedReplay"


@pytest.mark.parametrize("name, term, modules, options", [
    ("bir_si_repulsion", "drep_r", ("fcE", "toZ_mu", "toZ_logvar"), {}),
    ("bir_si_repulsion_kl", "drep_r", ("fcE", "toZ_mu", "toZ_logvar"), {}),
    ("bir_si_repulsion_f", "drep_r", ("fcE", "toZ_mu", "toZ_logvar"), {}),
    ("bir_si_repulsion", "drep_r", ("fcE", "toZ_mu", "toZ_logvar"),
     dict(rep_drop_unmatched=True, rep_similarity_weight=True, rep_divergence="kl")),
    ("bir_si_repulsion", "drep_r", ("fcE", "toZ_mu", "toZ_logvar"), dict(rep_partner="prior_mode")),
    ("bir_si_recon_rep", "rrep_r", ("fcE", "toZ_mu", "fromZ", "toX"), {}),
    ("bir_si_recon_rep", "ratr_r", ("fcE", "toZ_mu", "fromZ", "toX"), {}),
    ("bir_si_recon_rep", "rrep_r", ("fcE", "toZ_mu", "fromZ", "toX"), dict(class_averaging=False)),
])
def test_each_term_has_gradients(shapes, name, term, modules, options):
    weights = dict(rep_weight=1.0, recon_rep_weight=1.0, recon_atr_weight=1.0, rep_f=1e9)  # f large: A non-empty
    method, rep, out = at_second_task(shapes, name, **weights, **options)
    rep.scores[1::2] = rep.scores[1::2].flip(1)  # both previous classes own some samples: matched pairs exist
    terms = method.replay_terms(rep, out)
    assert float(terms[term].detach()) > 0
    method.net.zero_grad(set_to_none=True)
    terms[term].backward()
    for module in modules:
        grads = [p.grad for p in getattr(method.net, module).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), module
    if options.get("rep_partner") == "prior_mode":
        assert method.net.z_class_means.grad.abs().sum() > 0


def test_contrastive_update_order(shapes):
    """after_backward adds L_con's gradient to fcE's main gradient and steps the second Adam over fcE + head;
    the head is outside the main optimiser."""
    method, rep, out = at_second_task(shapes, "bir_si_contrastive", c_lr=1e-3)
    method.net.zero_grad(set_to_none=True)
    method.rec_loss(out).backward()
    main = [p.grad.clone() for p in method.net.fcE.parameters()]
    head = [p.detach().clone() for p in method.proj_head.parameters()]
    method.after_backward(rep, out)
    assert all(not torch.equal(p.grad, g) for p, g in zip(method.net.fcE.parameters(), main))
    assert all(not torch.equal(p, h) for p, h in zip(method.proj_head.parameters(), head))
    in_main = {id(p) for group in method.opt.param_groups for p in group["params"]}
    assert not in_main & {id(p) for p in method.proj_head.parameters()}
    assert float(method._diag["con"]) > 0


def test_contrastive_isolated_leaves_main_gradients(shapes):
    method, rep, out = at_second_task(shapes, "bir_si_contrastive", contrastive_isolated=True, c_lr=1e-3)
    method.net.zero_grad(set_to_none=True)
    method.rec_loss(out).backward()
    main = [p.grad.clone() for p in method.net.fcE.parameters()]
    before = [p.detach().clone() for p in method.net.fcE.parameters()]
    method.after_backward(rep, out)
    assert all(torch.equal(p.grad, g) for p, g in zip(method.net.fcE.parameters(), main))
    assert all(not torch.equal(p, b) for p, b in zip(method.net.fcE.parameters(), before))


def test_contrastive_needs_internal_replay(shapes):
    with pytest.raises(ValueError, match="internal replay"):
        build(shapes, "bir_si_contrastive", internal_replay=False)


@pytest.mark.parametrize("name, overrides", [
    ("bir_si_repulsion", dict(rep_weight=0.0)),
    ("bir_si_recon_rep", dict(recon_rep_weight=0.0, recon_atr_weight=0.0)),
    ("bir_si_views", {}),
])
def test_zero_weight_and_views_match_bir_si(shapes, name, overrides):
    _, reference, ref_acc = run_two_tasks(shapes, "bir_si")
    _, losses, acc = run_two_tasks(shapes, name, **overrides)
    for key, value in reference.items():
        assert losses[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
    for row, ref_row in zip(acc, ref_acc):
        for setting in ref_row:
            assert row[setting] == pytest.approx(ref_row[setting], abs=1e-5)
    extra = {metric for metric, t in losses if t == 1} - {metric for metric, _ in reference}
    assert extra and all(math.isfinite(losses[(m, 1)]) for m in extra)  # the variant's diagnostics are logged


def test_diagnostics_logged(shapes):
    _, losses, _ = run_two_tasks(shapes, "bir_si_repulsion_f")
    for name in ("drep_r", "drep", "drep_ratio", "matched_frac", "ambiguous_frac"):
        assert (f"loss/{name}", 1) in losses and (f"loss/{name}", 0) not in losses
    assert 0 <= losses[("loss/matched_frac", 1)] <= 1 and 0 <= losses[("loss/ambiguous_frac", 1)] <= 1
    ratio = losses[("loss/drep_ratio", 1)]
    assert ratio > 0 and ratio < 1e-3  # λ = 1e-6 keeps it tiny (docs/bir.md#tiny-exaggeration-weights)


def test_checkpoint_carries_generator_and_second_optimiser(shapes):
    method, rep, out = at_second_task(shapes, "bir_si_contrastive")
    method.opt.zero_grad()
    method.rec_loss(out).backward()
    method.after_backward(rep, out)
    state = method.state_dict()
    copy = build(shapes, "bir_si_contrastive")
    copy.load_state_dict(state)
    assert torch.equal(copy.exag_generator.get_state(), method.exag_generator.get_state())
    assert copy.opt_con.state_dict()["state"].keys() == method.opt_con.state_dict()["state"].keys()
    assert torch.equal(copy.view_decoder.deconvLayer1.deconv.weight, method.view_decoder.deconvLayer1.deconv.weight)
    g1, g2 = method.exag_generator, copy.exag_generator
    assert torch.equal(ex.view_augment(rep.x.view(-1, 16, 2, 2)[:, :3], g1, False),
                       ex.view_augment(rep.x.view(-1, 16, 2, 2)[:, :3], g2, False))


def test_view_decoder_runs_as_upstreams_previous_model_decoder_in_eval_mode(shapes):
    """Upstream builds view 2 with the previous model's never-trained decoder in eval mode (BN with its initial
    statistics); view_decoder_mode: train normalises each batch instead, which spreads the views far wider."""
    views = {}
    for mode in ("eval", "train"):
        method = build(shapes, "bir_si_views", view_decoder_mode=mode)
        method.train()
        assert method.view_decoder.training == (mode == "train")
        x = method.rows(shapes.task(0).x[:32])
        with torch.no_grad():
            views[mode] = method.view_decoder(x)
            reference = copy.deepcopy(method.view_decoder).train(mode == "train")(x)
        assert torch.equal(views[mode], reference)
    assert views["eval"].std() < views["train"].std() / 3
