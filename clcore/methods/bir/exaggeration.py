"""Exaggeration variants of BI-R+SI ([MC], jackmillichamp/brain-inspired-replay;
docs/bir.md#exaggeration-losses).

Replayed samples of "competing" previous classes (the teacher's top-2 over C_{t-1}) are pushed apart: in latent
distribution (`bir_si_repulsion*`), in reconstruction (`bir_si_recon_rep`) or by a supervised contrastive loss on a
second, augmented view (`bir_si_contrastive`; `bir_si_views` builds that view without the loss). The loss pieces are
pure functions of tensors; all randomness they need comes from a dedicated generator passed in.
Index conventions: class ids below are positions in C_{t-1} (columns of the teacher scores s̃), 0..n_prev-1.

Our decisions where upstream leaves room (docs/bir.md#reconstructions): with fewer than 2 previous classes there
is no competitor and no term; an unmatched sample's fallback partner class excludes its own class when another is
present, and a sample is never its own partner (KL would be 0); a term over an empty index set is 0 (no gradient)
and is logged as 0; class averaging applies to the reconstruction targets only; `prior_mode` divides L_drep by the
run's KL divisor (D_in by default).
The view-2 augmentation (docs/bir.md#view-augmentation) lives here, next to its only user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import register
from .generative_replay import PRESETS, GenerativeReplay, GRHparams, Replay, VAEPass
from .vae import ConvD

SUPCON_BASE_TAU = 0.07  # [JM] SupConLoss base_temperature


# -- competitors, ambiguity filter, groups ------------------------------------------------------------------
def competitors(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b): top-1 ("own") and top-2 (competitor) of s̃ [B, n_prev] per row (n_rep = 1, needs n_prev >= 2)."""
    top = scores.topk(2, dim=1).indices
    return top[:, 0], top[:, 1]


def ambiguous(scores: torch.Tensor, own: torch.Tensor, comp: torch.Tensor, f: float) -> torch.Tensor:
    """A = {i : p_i(a_i) < f · p_i(b_i)} with p = softmax(s̃) at T = 1 (bool [B])."""
    p = scores.softmax(dim=1)
    return p.gather(1, own[:, None])[:, 0] < f * p.gather(1, comp[:, None])[:, 0]


def class_counts(own: torch.Tensor, n_classes: int) -> torch.Tensor:
    """|G_c| for every class c, G_c = {j : a_j = c}."""
    return torch.bincount(own, minlength=n_classes)


def representatives(own: torch.Tensor, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """r(c): a member of G_c drawn uniformly (one uniform per class), -1 where G_c is empty ([n_classes])."""
    counts = class_counts(own, n_classes)
    order = torch.argsort(own, stable=True)  # members of each class are contiguous in `order`
    starts = counts.cumsum(0) - counts
    u = torch.rand(n_classes, generator=generator, device=own.device)
    pick = starts + (u * counts).long().clamp(max=(counts - 1).clamp(min=0))
    rep = order[pick.clamp(max=own.numel() - 1)]
    return torch.where(counts > 0, rep, torch.full_like(rep, -1))


def partner_classes(own: torch.Tensor, comp: torch.Tensor, n_classes: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(partner class, matched): b_i where G_{b_i} ≠ ∅ (matched), else a class drawn uniformly among the present
    classes other than a_i (a_i itself only when no other class is present)."""
    present = class_counts(own, n_classes) > 0
    matched = present[comp]
    others = present[None, :] & (torch.arange(n_classes, device=own.device)[None, :] != own[:, None])
    others = torch.where(others.any(1, keepdim=True), others, present[None, :].expand_as(others))
    cum = others.long().cumsum(1)  # [B, n]: k-th allowed class is the first column with cum == k + 1
    k = (torch.rand(own.numel(), generator=generator, device=own.device) * cum[:, -1]).long()
    fallback = torch.searchsorted(cum, (k + 1)[:, None]).squeeze(1)
    return torch.where(matched, comp, fallback), matched


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_{i∈mask} v_i / |mask|; 0 (no term, no gradient) when the set is empty."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


# -- divergences between diagonal Gaussians ----------------------------------------------------------------
def gaussian_kl(mu1, logvar1, mu2, logvar2) -> torch.Tensor:
    """KL(q1‖q2) = ½ Σ_d [σ1²/σ2² + (μ2 − μ1)²/σ2² + log σ2² − log σ1² − 1] (summed over the last dim)."""
    return 0.5 * ((logvar1 - logvar2).exp() + (mu2 - mu1).pow(2) / logvar2.exp() + logvar2 - logvar1 - 1).sum(-1)


def gaussian_js(mu1, logvar1, mu2, logvar2) -> torch.Tensor:
    """JS*(q1,q2) = ½ KL(q1‖m) + ½ KL(q2‖m), m = N((μ1+μ2)/2, (σ1²+σ2²)/4) ("law of the average")."""
    mu_m = 0.5 * (mu1 + mu2)
    logvar_m = torch.logaddexp(logvar1, logvar2) - 2 * torch.log(torch.tensor(2.0, device=mu1.device))
    return 0.5 * gaussian_kl(mu1, logvar1, mu_m, logvar_m) + 0.5 * gaussian_kl(mu2, logvar2, mu_m, logvar_m)


DIVERGENCES = {"kl": gaussian_kl, "js": gaussian_js}
MIN_DIVERGENCE = 1e-6


def distribution_repulsion(mu, logvar, mu_b, logvar_b, mask, divergence: str = "js") -> torch.Tensor:
    """L_drep = mean_{i∈mask} 1 / D(q_i, q_b(i)), q_i = N(μ_i, σ_i²), q_b(i) = N(μ_b,i, σ_b,i²) (rows aligned)."""
    d = DIVERGENCES[divergence](mu, logvar, mu_b, logvar_b)
    d = torch.where(mask, d, torch.ones_like(d))  # keeps masked rows (e.g. a sample paired with itself) finite
    # two near-identical posteriors give D ≈ 0, which float32 rounding can make negative; upstream's 1/D then
    # explodes or flips sign. [OURS] guard: D ≥ MIN_DIVERGENCE (1/D ≤ 1e6), reached only in that case.
    d = d.clamp(min=MIN_DIVERGENCE)
    return masked_mean(1 / d, mask)


def similarity_factor(scores: torch.Tensor, own: torch.Tensor, comp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """529bdff factor 1e4 · Σ_{i∈mask} s_i², s_i = (p_i(b_i) + 1e-3) / p_i(a_i), p = softmax(s̃) at T = 1."""
    p = scores.softmax(dim=1)
    s = (p.gather(1, comp[:, None])[:, 0] + 1e-3) / p.gather(1, own[:, None])[:, 0]
    return 1e4 * torch.where(mask, s.pow(2), torch.zeros_like(s)).sum()


# -- reconstruction repulsion / attraction ------------------------------------------------------------------
def half_mse(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """MSE(u, v) = (1/U) Σ_u ½ (u − v)² per row."""
    return 0.5 * (u - v).flatten(1).pow(2).mean(1)


def class_means(x: torch.Tensor, own: torch.Tensor, n_classes: int) -> torch.Tensor:
    """mean{x_j : a_j = c} for every class c (zeros where G_c is empty), rows flattened: [n_classes, U]."""
    flat = x.flatten(1)
    sums = torch.zeros(n_classes, flat.shape[1], device=x.device, dtype=flat.dtype).index_add_(0, own, flat)
    return sums / class_counts(own, n_classes).clamp(min=1)[:, None].to(flat.dtype)


def recon_targets(x: torch.Tensor, own: torch.Tensor, comp: torch.Tensor, n_classes: int, averaging: bool,
                  rep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tgt_rep, tgt_atr), without gradient: class means of x̃ for b_i and a_i (averaging), else x̃_{r(b_i)},
    x̃_{r(a_i)} with `rep` from `representatives`. Unmatched rows of tgt_rep are placeholders (masked later)."""
    x = x.detach()
    if averaging:
        means = class_means(x, own, n_classes)
        return means[comp], means[own]
    flat = x.flatten(1)
    return flat[rep[comp].clamp(min=0)], flat[rep[own]]


def recon_repulsion(tgt_rep: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_rrep = mean_{i∈mask} 1 / MSE(tgt_rep(i), x̂_i), mask = A ∩ matched."""
    mse = half_mse(tgt_rep, x_hat.flatten(1))
    return masked_mean(1 / torch.where(mask, mse, torch.ones_like(mse)), mask)


def recon_attraction(tgt_atr: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """L_ratr = mean_i MSE(tgt_atr(i), x̂_i) over all replayed samples."""
    return half_mse(tgt_atr, x_hat.flatten(1)).mean()


# -- supervised contrastive loss ---------------------------------------------------------------------------
def supcon_weights(scores: torch.Tensor, soft: bool = True, softmax: bool = False) -> torch.Tensor:
    """Positive weights [2B, 2B] over rows (view 1 rows, then view 2 rows), diagonal included (removed by
    `supcon`): w_ij = s̃_i·s̃_j (soft; raw logits, or softmax(s̃) with `softmax`), else 1[ŷ_i = ŷ_j], ŷ = argmax s̃."""
    if soft:
        s = scores.softmax(1) if softmax else scores
        w = s @ s.T
    else:
        y = scores.argmax(1)
        w = (y[:, None] == y[None, :]).to(scores.dtype)
    return w.repeat(2, 2)


def supcon(features: torch.Tensor, weights: torch.Tensor, tau: float) -> torch.Tensor:
    """L_con = −(τ/0.07) · mean_i [Σ_{j≠i} w_ij (f_i·f_j/τ − log Σ_{a≠i} exp(f_i·f_a/τ)) / Σ_{j≠i} w_ij],
    anchors i over all rows of `features` (normalised projections [2B, d])."""
    n = features.shape[0]
    off_diag = ~torch.eye(n, dtype=torch.bool, device=features.device)
    logits = features @ features.T / tau
    log_norm = logits.masked_fill(~off_diag, float("-inf")).logsumexp(1, keepdim=True)
    w = weights * off_diag
    mean_log_prob = (w * (logits - log_norm)).sum(1) / w.sum(1)
    return -(tau / SUPCON_BASE_TAU) * mean_log_prob.mean()


def dropout(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Inverted dropout, always active: x · 1[u ≥ p] / (1 − p), u ~ U(0,1) from `generator`."""
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1 - p)


class ProjectionHead(nn.Module):
    """f = normalise(Linear_{e→out}(dropout_p(e))) with dropout active in train and eval mode ([JM] HEAD)."""

    def __init__(self, in_dim: int, out_dim: int = 100, p: float = 0.5):
        super().__init__()
        self.linear, self.p = nn.Linear(in_dim, out_dim), p

    def forward(self, e: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return F.normalize(self.linear(dropout(e, self.p, generator)), dim=1)


# -- augmentation of the contrastive view 2 ----------------------------------------------------------------
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # kornia rgb_to_grayscale


def _per_sample(flags: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(flags[:, None, None, None], new, old)


def view_augment(x: torch.Tensor, generator: torch.Generator, crop: bool, crop_size: int = 24) -> torch.Tensor:
    """aug(x) for images [B,C,H,W]: x' = (x − lo)/(hi − lo) per sample; horizontal flip (p .5), random channel
    permutation (p .75), a crop_size² crop at a uniform position per sample when `crop` (the batch-level coin,
    p .5, drawn by the caller), grayscale 0.299R + 0.587G + 0.114B (p .25, 3 channels); out = x'·(hi − lo) + lo."""
    b, c, h, w = x.shape
    dev = x.device
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    scale = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp(min=1e-12)
    x = (x - lo) / scale
    u = torch.rand(b, 3, generator=generator, device=dev)  # flip, channel permutation, grayscale coins
    x = _per_sample(u[:, 0] < 0.5, x.flip(3), x)
    perm = torch.rand(b, c, generator=generator, device=dev).argsort(1)
    x = _per_sample(u[:, 1] < 0.75, x.gather(1, perm[:, :, None, None].expand_as(x)), x)
    if crop:
        offsets = torch.randint(0, min(h, w) - crop_size + 1, (b, 2), generator=generator, device=dev)
        span = torch.arange(crop_size, device=dev)
        rows, cols = offsets[:, :1] + span, offsets[:, 1:] + span  # [B, crop_size]
        batch = torch.arange(b, device=dev)[:, None, None]
        x = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if c == 3:
        gray = torch.einsum("bchw,c->bhw", x, x.new_tensor(GRAY_WEIGHTS))[:, None].expand_as(x)
        x = _per_sample(u[:, 2] < 0.25, gray, x)
    return (x * scale + lo).contiguous()


# -- the method ------------------------------------------------------------------------------------------------
@dataclass
class ExagHparams(GRHparams):
    repulsion: bool = False              # distribution repulsion L_drep on ([JM] --repulsion)
    rep_weight: float = 1e-6             # λ_rep ([JM] HEAD options.py)
    rep_divergence: Literal["js", "kl"] = "js"  # js (JS*, law of the average) | kl ([JM] 3098111)
    use_rep_f: bool = False              # ambiguity filter A = {p(a) < f·p(b)}, else A = all ([JM] --rep-f)
    rep_f: float = 20.0                  # f ([JM] HEAD options.py)
    # posterior of x̃_{r(b)} ([JM] 3098111) | prior_mode: mode of b /D_in ([JM] 6421a6d)
    rep_partner: Literal["posterior", "prior_mode"] = "posterior"
    rep_similarity_weight: bool = False  # × 1e4·Σ s_i² ([JM] 529bdff; docs/bir.md#broken-repulsion-flag)
    rep_drop_unmatched: bool = False     # drop unmatched samples; upstream keeps them (docs/bir.md#unmatched-samples)
    recon_repulsion: bool = False        # reconstruction repulsion + attraction on ([JM] HEAD --recon-rep)
    recon_rep_weight: float = 1e-6       # λ_rr ([JM] HEAD options.py)
    recon_atr_weight: float = 1e-6       # λ_ra ([JM] HEAD options.py)
    class_averaging: bool = True         # recon targets = class means of x̃, else one uniform member ([JM] HEAD)
    contrastive: bool = False            # SupCon on the two views, second optimiser (implies build_views) ([JM] HEAD)
    build_views: bool = False            # build view 2 = convE(aug(D_c(x̃))) without training on L_con (control run)
    tau: float = 1.0                     # SupCon temperature τ ([JM] HEAD options.py)
    c_lr: float = 1e-8                   # lr of the second Adam over fcE + projection head ([JM] HEAD options.py)
    c_scores: bool = True                # soft positives w_ij = s̃_i·s̃_j, else 1[ŷ_i = ŷ_j] ([JM] HEAD)
    contrastive_isolated: bool = False   # L_con reaches fcE only via the second Adam (docs/bir.md#contrastive-update)
    c_scores_softmax: bool = False       # softmax(s̃) weights, not raw logits (docs/bir.md#contrastive-update)
    emulate_rng_reset: bool = False      # [JM]'s seed-1 reset, per view build (docs/bir.md#per-iteration-rng-reset)
    # D_c as upstream's previous-model decoder, in eval mode (BN with its initial statistics), or in train mode
    # (BN normalising each batch); docs/bir.md#extra-view-decoder
    view_decoder_mode: Literal["eval", "train"] = "eval"


EXAG_SEED_OFFSET = 7_919_000  # the dedicated generator's seed = run seed + offset (disjoint from the run's streams)


class ExaggeratedReplay(GenerativeReplay):
    """BI-R+SI with the exaggeration terms of docs/bir.md#exaggeration-losses: `replay_terms` adds
    λ_rep·L_drep, λ_rr·L_rrep and λ_ra·L_ratr to L_rpl; `after_backward` builds view 2 and (contrastive)
    backpropagates L_con into fcE and the projection head, steps the second Adam, and lets the main optimiser
    step fcE with the accumulated gradients."""

    Hparams = ExagHparams

    def __init__(self, net, hp: ExagHparams, ctx):
        views = hp.build_views or hp.contrastive
        if (hp.repulsion or hp.recon_repulsion or views) and hp.scenario != "class":
            raise ValueError("the exaggeration variants are defined for class-IL only (scenario: class)")
        if (hp.repulsion or hp.recon_repulsion) and not hp.feedback:
            raise ValueError("repulsion needs the classifier's own VAE (feedback: true): posteriors, reconstructions")
        if hp.repulsion and hp.rep_partner == "prior_mode" and hp.prior != "gmm":
            raise ValueError("rep_partner: prior_mode needs prior: gmm (one mode per class)")
        if views and not (hp.internal_replay and hp.conv != "none"):
            raise ValueError("contrastive / build_views need internal replay (conv features): conv, internal_replay")
        super().__init__(net, hp, ctx)
        self.views = views
        seed = ctx.seed + EXAG_SEED_OFFSET
        self.exag_generator = torch.Generator(device=ctx.device).manual_seed(seed)
        self.exag_coins = torch.Generator().manual_seed(seed)  # batch-level coins on the host: no device sync
        self._diag: dict[str, torch.Tensor] = {}
        if views:
            with torch.random.fork_rng(devices=[]):  # D_c and head init from the dedicated seed, global RNG untouched
                torch.manual_seed(seed)
                self.view_decoder = ConvD(self.net.in_shape[0], hp.c0, self.net.convE.out_size).to(ctx.device)
                self.proj_head = ProjectionHead(self.net.fcE[-2].out_features).to(ctx.device)
            self.view_decoder.requires_grad_(False)
            if hp.view_decoder_mode == "eval":
                self.frozen = (*self.frozen, "view_decoder")
        if hp.contrastive:
            self.opt_con = torch.optim.Adam([*self.net.fcE.parameters(), *self.proj_head.parameters()], lr=hp.c_lr,
                                            betas=(0.9, 0.999))

    # -- L_rpl terms (docs/bir.md#exaggeration-losses) ---------------------------------------------
    def replay_terms(self, rep: Replay, out: VAEPass) -> dict[str, torch.Tensor]:
        hp, g = self.hp, self.exag_generator
        if not (hp.repulsion or hp.recon_repulsion) or rep.scores is None or rep.scores.shape[1] < 2:
            return {}  # fewer than 2 previous classes: no competitor
        scores, n = rep.scores, rep.scores.shape[1]
        own, comp = competitors(scores)
        in_a = ambiguous(scores, own, comp, hp.rep_f) if hp.use_rep_f else torch.ones_like(own, dtype=torch.bool)
        rep_idx = representatives(own, n, g)
        partner, matched = partner_classes(own, comp, n, g)
        self._diag.update(ambiguous_frac=in_a.float().mean(), matched_frac=matched.float().mean())
        terms = {}
        if hp.repulsion:
            if hp.rep_partner == "posterior":
                j = rep_idx[partner]
                mask = in_a & (j != torch.arange(len(j), device=j.device))  # a sample is never its own partner
                mask = mask & matched if hp.rep_drop_unmatched else mask
                mu_b, logvar_b = out.mu[j], out.logvar[j]
            else:
                mask, c = in_a, rep.prev_classes[comp]
                mu_b, logvar_b = self.net.z_class_means[c], self.net.z_class_logvars[c]
            drep = distribution_repulsion(out.mu, out.logvar, mu_b, logvar_b, mask, hp.rep_divergence)
            if hp.rep_partner == "prior_mode":
                drep = drep / self.kl_div
            if hp.rep_similarity_weight:
                drep = drep * similarity_factor(scores, own, comp, mask)
            terms["drep_r"], self._diag["drep"] = hp.rep_weight * drep, drep.detach()
        if hp.recon_repulsion:
            tgt_rep, tgt_atr = recon_targets(out.recon_target, own, comp, n, hp.class_averaging, rep_idx)
            rrep, ratr = recon_repulsion(tgt_rep, out.x_hat, in_a & matched), recon_attraction(tgt_atr, out.x_hat)
            terms["rrep_r"], self._diag["rrep"] = hp.recon_rep_weight * rrep, rrep.detach()
            terms["ratr_r"], self._diag["ratr"] = hp.recon_atr_weight * ratr, ratr.detach()
        return terms

    # -- view 2 and the contrastive update -------------------------------------------------------------
    @torch.no_grad()
    def second_view(self, x: torch.Tensor) -> torch.Tensor:
        """convE(aug(D_c(x̃))) for replayed features x̃ (no gradient; D_c never trained, convE frozen)."""
        if self.hp.emulate_rng_reset:
            self.exag_generator.manual_seed(self.ctx.seed + EXAG_SEED_OFFSET)
            self.exag_coins.manual_seed(self.ctx.seed + EXAG_SEED_OFFSET)
        crop = bool(torch.rand(1, generator=self.exag_coins) < 0.5)
        return self.net.convE(view_augment(self.view_decoder(x), self.exag_generator, crop))

    def after_backward(self, rep: Replay | None, out: VAEPass | None) -> None:
        """L_con on both views (2B_r rows through fcE and the head); contrastive: its backward (accumulating onto
        fcE's main gradients, or isolated), then the second Adam's step over fcE + head."""
        if not self.views or rep is None:
            return
        x2 = self.second_view(rep.x)
        with torch.set_grad_enabled(self.hp.contrastive):
            f = self.proj_head(self.net.encode(torch.cat([rep.x, x2]), from_features=True), self.exag_generator)
            l_con = supcon(f, supcon_weights(rep.scores, self.hp.c_scores, self.hp.c_scores_softmax), self.hp.tau)
        self._diag["con"] = l_con.detach()
        if not self.hp.contrastive:
            return
        params = [*self.net.fcE.parameters(), *self.proj_head.parameters()]
        if self.hp.contrastive_isolated:
            main_grads = [p.grad for p in params]
            for p, grad in zip(params, torch.autograd.grad(l_con, params)):
                p.grad = grad
            self.opt_con.step()
            for p, grad in zip(params, main_grads):
                p.grad = grad
        else:
            self.proj_head.zero_grad(set_to_none=True)
            l_con.backward()
            self.opt_con.step()
        self.proj_head.zero_grad(set_to_none=True)

    # -- logging: diagnostics stay out of the loss ------------------------------------------------------
    def train_step(self, x, y):
        """The GR step, plus per-step diagnostics: unweighted terms, λ·term / (L_rec + L_KL + L_KD) of the replay,
        the matched fraction and |A|/B_r (averaged per task by the loss log)."""
        self._diag = {}
        logs = super().train_step(x, y)
        base = sum(logs[k].detach() for k in ("rec_r", "kl_r", "kd_r", "ce_r") if k in logs)
        for name in ("drep", "rrep", "ratr"):
            if f"{name}_r" in logs:
                self._diag[f"{name}_ratio"] = logs[f"{name}_r"].detach() / base
        if "con" in self._diag and self.hp.contrastive:
            self._diag["con_ratio"] = self._diag["con"] / base
        return {**logs, **self._diag}

    # -- checkpointing ---------------------------------------------------------------------------------
    def extra_state(self):
        state = {**super().extra_state(), "exag_rng": self.exag_generator.get_state(),
                 "exag_coins": self.exag_coins.get_state()}
        if self.hp.contrastive:
            state["opt_con"] = self.opt_con.state_dict()
        return state

    def load_extra(self, state):
        super().load_extra(state)
        self.exag_generator.set_state(state["exag_rng"])
        self.exag_coins.set_state(state["exag_coins"])
        if self.hp.contrastive:
            self.opt_con.load_state_dict(state["opt_con"])


# Registry (docs/bir.md#exaggeration-variants): `bir_si`'s preset plus each variant's flags; λ, f, τ, c_lr at
# their [JM] defaults above.
EXAG_PRESETS = {
    "bir_si_repulsion": dict(repulsion=True, rep_divergence="js"),
    "bir_si_repulsion_kl": dict(repulsion=True, rep_divergence="kl"),
    "bir_si_repulsion_f": dict(repulsion=True, rep_divergence="js", use_rep_f=True),
    "bir_si_recon_rep": dict(recon_repulsion=True, class_averaging=True),
    "bir_si_views": dict(build_views=True),
    "bir_si_contrastive": dict(contrastive=True, c_scores=True),
}
for _name, _flags in EXAG_PRESETS.items():
    register(_name, **PRESETS["bir_si"], **_flags)(ExaggeratedReplay)
