"""Conditional sampling against the exact conditionals of a labelled Gaussian mixture (float64).

The mixture's components carry class labels, so p_t(x | c), its score and the class
posterior p_t(c | x) are closed form (scoresde.oracles). Checked here:
- the oracle: the conditional score is the gradient of the conditional log-density, and
  the class posterior is Bayes' rule;
- guidance 0 is the exact conditional score; classifier guidance at scale 1 with the
  exact posterior classifier equals it (to 1e-10); classifier-free guidance at w equals
  classifier guidance at 1 + w (to 1e-10), through ``sample()`` with every solver of the
  registry, with NFE counted 2 per classifier-free guided evaluation;
- guided samples follow p(x | c) (mean within 3 standard errors);
- a conditional network: one batched call per guided evaluation, the null label.
"""
from __future__ import annotations


import pytest
import torch

import scoresde as sd
import solvers
from scoresde.guidance import NULL_LABEL, GuidedScore
from scoresde.samplers import SOLVERS

F64 = torch.float64
VP = sd.VPSDE(beta_min=0.1, beta_max=20.0)
DDPM = sd.DiscreteVPSDE.linear(N=50)


def mixture(sde=VP) -> sd.GaussianMixture:
    """Four components in 2-D, two classes (labels 0, 1, 1, 0), unequal weights."""
    means = torch.tensor([[2.0, 0.0], [-2.0, 0.5], [0.0, 2.0], [0.5, -2.0]], dtype=F64)
    covs = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.2]]), torch.eye(2) * 0.25,
                        torch.tensor([[0.2, -0.05], [-0.05, 0.4]]), torch.eye(2) * 0.15]).to(F64)
    return sd.GaussianMixture(torch.tensor([0.1, 0.3, 0.4, 0.2], dtype=F64), means, covs,
                              sde=sde, labels=[0, 1, 1, 0])


def points(n=64, seed=0):
    return 2.0 * torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


def test_conditional_score_is_the_gradient_of_the_conditional_log_density():
    gm = mixture()
    x = points().requires_grad_(True)
    cond = torch.arange(64) % 3 - 1                        # -1, 0, 1: none, class 0, class 1
    t = torch.full((64,), 0.3, dtype=F64)
    (grad,) = torch.autograd.grad(gm.log_prob(x, t, cond).sum(), x)
    assert (gm.score(x.detach(), t, cond) - grad).abs().max() < 1e-12
    # label -1 is the unconditional score; the class mixture's score is the conditional one
    x = x.detach()
    assert torch.equal(gm.score(x, t, torch.full((64,), -1)), gm.score(x, t))
    assert (gm.score(x, t, torch.zeros(64, dtype=torch.long))
            - gm.conditional(0).score(x, t)).abs().max() < 1e-12


def test_class_posterior_is_bayes_rule():
    gm = mixture()
    x, t = points(), torch.full((64,), 0.5, dtype=F64)
    logits = gm.class_logits(x, t)
    prior = torch.log(torch.tensor([0.3, 0.7], dtype=F64))
    for c in (0, 1):
        bayes = gm.log_prob(x, t, torch.full((64,), c)) + prior[c] - gm.log_prob(x, t)
        assert (logits[:, c] - bayes).abs().max() < 1e-12
    assert (logits.exp().sum(1) - 1).abs().max() < 1e-14


def _guided(gm, cond, **kw):
    guide = {"guidance": None, "classifier": None, "classifier_scale": None, **kw}
    return GuidedScore(gm.score, **guide).bind(cond)


def test_guided_scores_equal_the_exact_conditional_score():
    gm = mixture()
    x = points(200, seed=3)
    cond = torch.arange(200) % 2
    worst = {}
    for t in (0.02, 0.3, 0.9):
        tb = torch.full((200,), t, dtype=F64)
        exact = gm.score(x, tb, cond)
        plain = _guided(gm, cond, guidance=0.0)(x, tb)
        assert torch.equal(plain, exact)                                # w = 0: one call
        clf = _guided(gm, cond, classifier=gm.class_logits, classifier_scale=1.0)(x, tb)
        worst["classifier"] = max(worst.get("classifier", 0), float((clf - exact).abs().max()))
        for w in (0.5, 3.0):
            cfg = _guided(gm, cond, guidance=w)(x, tb)
            clf_w = _guided(gm, cond, classifier=gm.class_logits, classifier_scale=1.0 + w)(x, tb)
            worst["cfg"] = max(worst.get("cfg", 0), float((cfg - clf_w).abs().max()))
    assert worst["classifier"] < 1e-10, worst
    assert worst["cfg"] < 1e-10, worst


def _options(solver):
    """Few evaluations, valid for each solver's steps rule."""
    if solver == "ode":
        return {"rtol": 1e-6, "atol": 1e-6}
    if solver == "sde_adaptive":
        return {"rtol": 1e-2, "atol": 1e-2, "dt": 0.05}
    if "steps" not in SOLVERS[solver].options:
        return {}
    if solver.startswith("ode_"):
        return {"steps": 2 * solvers.FIXED_ODE_METHODS[solver[4:]].stages}
    return {"steps": 5 if solver == "heun_karras" else 4}


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_every_solver_cfg_equals_classifier_guidance(solver):
    """The guided score is built once at the entry point: CFG at w = 1.5 and classifier
    guidance at 2.5 with exact parts give the same samples with every solver (same
    generator), CFG counting 2 evaluations per batched call."""
    sde = DDPM if SOLVERS[solver].requires is sd.DiscreteVPSDE else VP
    gm = mixture(sde)
    cond = torch.tensor([0, 1, 1, 0, 1, 0])
    runs = {}
    for name, kw in (("cfg", {"guidance": 1.5}),
                     ("clf", {"classifier": gm.class_logits, "classifier_scale": 2.5})):
        runs[name] = sd.sample(gm.score, sde, (6, 2), solver, cond=cond, dtype=F64,
                               generator=torch.Generator().manual_seed(0), **kw,
                               **_options(solver))
    cfg, clf = runs["cfg"], runs["clf"]
    assert (cfg.x - clf.x).abs().max() < 1e-8
    assert cfg.nfe == 2 * cfg.stats["network_calls"] > 0
    assert clf.nfe == clf.stats["network_calls"] == clf.stats["classifier_evals"]


def test_guidance_zero_samples_the_class_conditional():
    """w = 0 gives p(x | c): the same samples as the class mixture's own score, and their
    mean within 3 standard errors of the class mean."""
    gm = mixture()
    n = 4000
    x_T = VP.prior_sampling((n, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
    res = sd.sample(gm.score, VP, (n, 2), "dpm_solver++", steps=30, x_T=x_T,
                    cond=torch.ones(n, dtype=torch.long), guidance=0.0)
    ref = sd.sample(gm.conditional(1).score, VP, (n, 2), "dpm_solver++", steps=30, x_T=x_T)
    assert (res.x - ref.x).abs().max() < 1e-10
    assert res.nfe == 30
    target = gm.conditional(1)
    se = (torch.diagonal(target.covariance) / n).sqrt()
    assert ((res.x.mean(0) - target.mean).abs() / se).max() < 3


def test_cond_is_sliced_with_the_batch():
    gm = mixture()
    cond = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    x_T = VP.prior_sampling((7, 2), generator=torch.Generator().manual_seed(2), dtype=F64)
    whole = sd.sample(gm.score, VP, (7, 2), "ode_heun", steps=8, x_T=x_T, cond=cond,
                      guidance=2.0)
    parts = sd.sample(gm.score, VP, (7, 2), "ode_heun", steps=8, x_T=x_T, cond=cond,
                      guidance=2.0, batch_size=3)
    assert torch.equal(whole.x, parts.x)
    assert parts.nfe == 3 * whole.nfe          # three chunks
    one = sd.sample(gm.score, VP, (7, 2), "ode_heun", steps=8, x_T=x_T, cond=1)
    ones = sd.sample(gm.score, VP, (7, 2), "ode_heun", steps=8, x_T=x_T,
                     cond=torch.ones(7, dtype=torch.long))
    assert torch.equal(one.x, ones.x)


class CondNet(torch.nn.Module):
    """eps(x, t, c) = a_c x with a learned null a_null; counts calls and batch sizes."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([0.1, 0.2, 0.3], dtype=F64))  # class 0, 1, null
        self.batches = []

    def forward(self, x, t_in, cond=None):
        self.batches.append(x.shape[0])
        c = torch.full((x.shape[0],), -1) if cond is None else cond
        a = self.a[torch.where(c == NULL_LABEL, 2, c)]
        return a[:, None] * x


def test_conditional_network_one_batched_call_per_guided_evaluation():
    net = CondNet()
    model = sd.ScoreModel(net, VP)
    x_T = torch.ones(4, 2, dtype=F64)
    cond = torch.tensor([0, 1, 0, 1])
    w = 2.0
    res = sd.sample(model, VP, (4, 2), "ode_euler", steps=3, x_T=x_T, cond=cond, guidance=w)
    assert net.batches == [8, 8, 8] and res.nfe == 6 and res.stats["network_calls"] == 3
    # one Euler step by hand: eps~ = (1 + w) a_c x - w a_null x
    t0, t1 = VP.T, float(sd.grids.time_grid(VP, 3, 1e-3, "uniform")[1])
    alpha, std = VP.marginal_coeffs(torch.tensor([t0], dtype=F64))
    a = torch.tensor([0.1, 0.2, 0.1, 0.2], dtype=F64)[:, None]
    eps = (1 + w) * a * x_T - w * 0.3 * x_T
    drift, g = VP.sde(x_T, torch.full((4,), t0, dtype=F64))
    field = drift - 0.5 * g[:, None] ** 2 * (-eps / std)
    first = sd.sample(model, VP, (4, 2), "ode_euler", steps=1, x_T=x_T, cond=cond,
                      guidance=w, eps=t1)
    assert (first.x - (x_T + (t1 - t0) * field)).abs().max() < 1e-13
