"""Table 1: accuracy against NFE with exact scores (float64, VPSDE).

Deterministic samplers: global error of the probability-flow ODE solution against a dopri5
solve at rtol = atol = 1e-10 from the same x_T. Stochastic samplers: weak error (mean,
covariance, energy distance) against the exact law at their end time. Peers (diffusers,
k-diffusion) run on the same problem with the same exact noise prediction eps = -std score.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import scoresde as sd
from scoresde.data import gmm_oracle

from . import _common as C

EPS = 1e-3                  # end time of every sampler here (ddim/heun_karras then denoise to t = 0)
REF_TOL = 1e-10             # dopri5 reference
NFES = (5, 10, 20, 50, 100)
WEAK_NFES_FULL = (10, 20, 50, 100, 200, 500)
WEAK_NFES_QUICK = (10, 20, 50, 100)
FLOOR_SETS = 5              # independent exact sample sets behind each noise floor


# -- problems -------------------------------------------------------------------------
class EigenMixtureScore(torch.nn.Module):
    """The exact score of a diffused Gaussian mixture through eigendecompositions of its
    covariances, sum_k w_k N(alpha mu_k, V_k diag(alpha^2 e_k + std^2) V_k^T): einsums only.

    The same function as ``GaussianMixture.score`` (checked in ``agreement``), which
    broadcasts one Cholesky factor per sample and is 10-100x slower at these sizes; the
    benchmark wants many solves, so it uses this one. torch.func-compatible (no branching
    on values), so it also serves the exact-trace likelihoods.
    """

    def __init__(self, oracle: sd.GaussianMixture, sde, device: torch.device):
        super().__init__()
        e, V = torch.linalg.eigh(oracle.covs)                  # [K, D], [K, D, D]
        self.sde = sde
        self.register_buffer("e", e.to(device))
        self.register_buffer("V", V.to(device))
        self.register_buffer("mu", oracle.means.to(device))
        self.register_buffer("logw", torch.log(oracle.weights).to(device))
        self.dim = oracle.dim

    def _terms(self, x: Tensor, t: Tensor):
        alpha, std = self.sde._marginal_coeffs(t.to(x.dtype))
        a, s2 = alpha[:, None, None], (std ** 2)[:, None, None]
        c = a ** 2 * self.e.to(x.dtype)[None] + s2                          # [B, K, D]
        V = self.V.to(x.dtype)
        diff = x[:, None, :] - a * self.mu.to(x.dtype)[None]                # [B, K, D]
        y = torch.einsum("bkd,kde->bke", diff, V)
        w = y / c
        logn = (-0.5 * (y * w).sum(-1) - 0.5 * torch.log(c).sum(-1)
                - 0.5 * self.dim * math.log(2 * math.pi) + self.logw.to(x.dtype))
        return logn, w, V

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        logn, w, V = self._terms(x, t)
        resp = torch.softmax(logn, dim=-1)                                  # [B, K]
        return -torch.einsum("bk,bke,kde->bd", resp, w, V)

    def log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.logsumexp(self._terms(x, t)[0], dim=-1)

    def agreement(self, oracle: sd.GaussianMixture, x: Tensor) -> float:
        """max |this - oracle.score| / max |oracle.score| over x at five times."""
        worst = 0.0
        for t in (1e-3, 0.05, 0.3, 0.7, 1.0):
            tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
            ref = oracle.score(x, tb)
            worst = max(worst, float((self(x, tb) - ref).abs().max() / ref.abs().max()))
        return worst


@dataclass
class Problem:
    key: str
    title: str
    sde: sd.VPSDE
    oracle: sd.GaussianMixture
    x_T: Tensor                                        # [B, D] float64 on the device
    exact_flow: Optional[Callable[[float], Tensor]]    # closed-form PF-ODE solution at t
    score: Optional[EigenMixtureScore] = None
    refs: Dict[str, Tensor] = field(default_factory=dict)
    ref_note: str = ""
    score_note: str = ""

    def __post_init__(self):
        self.score = EigenMixtureScore(self.oracle, self.sde, self.x_T.device)
        x = self.x_T[:64]
        self.score_note = (f"exact score in the covariances' eigenbases (agrees with "
                           f"`{type(self.oracle).__name__}.score` to "
                           f"{self.score.agreement(self.oracle, x):.0e} relative)")

    @property
    def dim(self) -> int:
        return self.oracle.dim

    def eps_model(self, x: Tensor, t: Tensor) -> Tensor:
        """The exact noise prediction eps = -std(t) score(x, t), t a [batch] tensor."""
        std = self.sde._marginal_coeffs(t)[1]
        return -std[:, None] * self.score(x, t)

    def denoise(self, x: Tensor, t: float) -> Tensor:
        """Tweedie's x0 = (x + std^2 score)/alpha at time t."""
        tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        alpha, std = self.sde._marginal_coeffs(tb)
        return (x + std[:, None] ** 2 * self.score(x, tb)) / alpha[:, None]


def gauss64_params(dim: int = 64, seed: int = 0) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mean, covariance U diag(lam) U^T with eigenvalues log-spaced in [0.01, 4], U random."""
    g = C.seeded(seed)
    mean = 0.5 * torch.randn(dim, generator=g, dtype=torch.float64)
    U, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    lam = torch.logspace(math.log10(0.01), math.log10(4.0), dim, dtype=torch.float64)
    cov = U @ torch.diag(lam) @ U.T
    return mean, 0.5 * (cov + cov.T), U, lam


def make_problems(cfg: C.Config) -> List[Problem]:
    dev = cfg.device
    sde = sd.VPSDE()
    batch = 256 if cfg.quick else 1000
    out = []

    gmm = gmm_oracle().with_sde(sde)
    x_T = sde.prior_sampling((batch, 2), generator=C.seeded(1), dtype=torch.float64).to(dev)
    out.append(Problem("gmm2d", "2-D Gaussian mixture (scoresde.data.gmm_oracle(): 8 components "
                       "N(mu_k, 0.04 I) on a circle)", sde, gmm, x_T, None))

    mean, cov, U, lam = gauss64_params()
    g64 = sd.GaussianData(mean, cov, sde=sde)
    x_T = sde.prior_sampling((batch, 64), generator=C.seeded(2), dtype=torch.float64).to(dev)

    def exact_flow(t: float, x_T=x_T, mean=mean.to(dev), U=U.to(dev), lam=lam.to(dev)) -> Tensor:
        # y = U^T (x - alpha mu) decouples: y_k(t) = sqrt(C_k(t)/C_k(T)) y_k(T),
        # C_k = alpha^2 lam_k + std^2 (the PF-ODE of a Gaussian is linear)
        def coeffs(s):
            a, sd_ = sde.marginal_coeffs(torch.tensor([s], dtype=torch.float64))
            return float(a), float(sd_)
        aT, sT = coeffs(sde.T)
        at, st = coeffs(t)
        y = (x_T - aT * mean) @ U
        return at * mean + (y * torch.sqrt((at ** 2 * lam + st ** 2) / (aT ** 2 * lam + sT ** 2))) @ U.T

    out.append(Problem("gauss64", "64-D Gaussian (random rotation, covariance eigenvalues "
                       "log-spaced in [0.01, 4])", sde, g64, x_T, exact_flow))
    return out


def rms_error(x: Tensor, ref: Tensor) -> float:
    """RMS over the batch of ||x_i - ref_i|| / sqrt(D) = sqrt(mean of squared entries)."""
    return float(((x - ref) ** 2).mean().sqrt())


def build_references(p: Problem) -> None:
    shape = tuple(p.x_T.shape)
    ref = sd.sample(p.score, p.sde, shape, "ode", x_T=p.x_T, method="dopri5",
                    rtol=REF_TOL, atol=REF_TOL, eps=EPS, max_steps=1_000_000)
    p.refs["x_eps"] = ref.x
    p.refs["x0"] = p.denoise(ref.x, EPS)
    if p.exact_flow is not None:
        check = p.exact_flow(EPS)
        p.ref_note = (f"dopri5 at rtol = atol = {REF_TOL:g} ({ref.nfe} NFE); its own error "
                      f"against the closed-form solution: {rms_error(ref.x, check):.1e}")
    else:
        check = sd.sample(p.score, p.sde, shape, "ode", x_T=p.x_T, method="dopri8",
                          rtol=1e-12, atol=1e-12, eps=EPS, max_steps=1_000_000).x
        p.ref_note = (f"dopri5 at rtol = atol = {REF_TOL:g} ({ref.nfe} NFE); its distance to a "
                      f"dopri8 solve at 1e-12: {rms_error(ref.x, check):.1e}")


# -- deterministic samplers -------------------------------------------------------------
@dataclass
class Det:
    label: str
    solver: str
    opts: dict
    per_step: int       # NFE = per_step * steps + offset
    offset: int
    target: str         # "x_eps": the ODE state at EPS; "x0": Tweedie-denoised at EPS
    grid: str
    min_steps: int = 1

    def grid_steps(self, nfe: int) -> int:
        """Grid steps (noise levels for k-diffusion) closest to ``nfe`` evaluations."""
        return max(self.min_steps, round((nfe - self.offset) / self.per_step))

    def steps_for(self, nfe: int) -> int:
        """scoresde's ``steps`` (network evaluations) closest to ``nfe`` that the sampler
        can make exactly."""
        return self.per_step * self.grid_steps(nfe) + self.offset


OURS_DET = [
    Det("DDIM", "ddim", {}, 1, 0, "x0", "uniform"),
    Det("DPM-Solver-1", "dpm_solver", {"order": 1}, 1, 0, "x_eps", "logsnr"),
    Det("DPM-Solver-2 (singlestep)", "dpm_solver", {"order": 2}, 2, 0, "x_eps", "logsnr"),
    Det("DPM-Solver-3 (singlestep)", "dpm_solver", {"order": 3}, 3, 0, "x_eps", "logsnr"),
    Det("DPM-Solver-2 (multistep)", "dpm_solver", {"order": 2, "method": "multistep"}, 1, 0,
        "x_eps", "logsnr"),
    Det("DPM-Solver-3 (multistep)", "dpm_solver", {"order": 3, "method": "multistep"}, 1, 0,
        "x_eps", "logsnr"),
    Det("DPM-Solver++(2M)", "dpm_solver++", {"order": 2}, 1, 0, "x_eps", "logsnr"),
    Det("DPM-Solver++(3M)", "dpm_solver++", {"order": 3}, 1, 0, "x_eps", "logsnr"),
    # diffusers' default grid is uniform in t: this row is the like-for-like comparison
    Det("DPM-Solver++(2M), uniform grid", "dpm_solver++", {"order": 2, "grid": "uniform"}, 1, 0,
        "x_eps", "uniform"),
    Det("Karras Heun", "heun_karras", {}, 2, -1, "x0", "karras", min_steps=2),
    Det("Euler (ode_euler)", "ode_euler", {}, 1, 0, "x_eps", "uniform"),
    Det("Heun (ode_heun)", "ode_heun", {}, 2, 0, "x_eps", "uniform"),
    Det("RK4 (ode_rk4)", "ode_rk4", {}, 4, 0, "x_eps", "uniform"),
]


@dataclass
class Row:
    label: str
    source: str                       # "scoresde", "diffusers", "k-diffusion"
    grid: str
    target: str
    cells: Dict[int, Tuple[int, float]] = field(default_factory=dict)   # target NFE -> (nfe, err)


def run_ours_det(p: Problem, spec: Det, nfe: int) -> Tuple[int, float]:
    res = sd.sample(p.score, p.sde, tuple(p.x_T.shape), spec.solver, x_T=p.x_T,
                    steps=spec.steps_for(nfe), **spec.opts)
    return res.nfe, rms_error(res.x, p.refs[spec.target])


# -- peers: diffusers -----------------------------------------------------------------
def vp_time_from_alphabar(sde: sd.VPSDE, abar: Tensor) -> Tensor:
    """t with alphabar(t) = abar for the linear VPSDE: 0.5 (b1 - b0) t^2 + b0 t + log abar = 0."""
    b0, b1 = sde.beta_min, sde.beta_max
    la = torch.log(abar.to(torch.float64))
    return (-b0 + torch.sqrt(b0 ** 2 - 2.0 * (b1 - b0) * la)) / (b1 - b0)


def diffusers_betas(sde: sd.VPSDE, N: int = 1000):
    """DDPM betas of the VPSDE at the index times t_k = (k + 1)/N: alphas_cumprod[k] = alphabar(t_k)."""
    t = torch.arange(0, N + 1, dtype=torch.float64) / N
    log_abar = 2.0 * sde._log_alpha(t)
    return (-torch.expm1(log_abar[1:] - log_abar[:-1])).numpy()


class DiffusersEps:
    """eps(x, k) for diffusers' integer timestep k, exact and consistent with the scheduler's
    own (float32) alphas_cumprod: evaluated at the VPSDE time with that alphabar."""

    def __init__(self, p: Problem, scheduler):
        self.p = p
        self.t_of_k = vp_time_from_alphabar(p.sde, scheduler.alphas_cumprod).to(p.x_T.device)
        self.calls = 0

    def __call__(self, x: Tensor, k) -> Tensor:
        self.calls += 1
        t = self.t_of_k[int(k)].expand(x.shape[0]).to(x.dtype)
        return self.p.eps_model(x, t)


def diffusers_det(p: Problem) -> List[Tuple[Det, Callable[[int], Tuple[Tensor, int]]]]:
    try:
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    except Exception:  # noqa: BLE001
        return []
    betas = diffusers_betas(p.sde)

    def dpm(order: int):
        def run(nfe: int):
            sch = DPMSolverMultistepScheduler(
                num_train_timesteps=1000, trained_betas=betas, solver_order=order,
                algorithm_type="dpmsolver++", timestep_spacing="linspace",
                final_sigmas_type="sigma_min", lower_order_final=True)
            sch.set_timesteps(nfe, device=p.x_T.device)
            eps = DiffusersEps(p, sch)
            x = p.x_T.clone()
            for k in sch.timesteps:
                x = sch.step(eps(x, k), k, x).prev_sample
            return x, eps.calls
        return run

    def ddim(nfe: int):
        sch = DDIMScheduler(num_train_timesteps=1000, trained_betas=betas, clip_sample=False,
                            set_alpha_to_one=False, timestep_spacing="trailing")
        sch.set_timesteps(nfe, device=p.x_T.device)
        eps = DiffusersEps(p, sch)
        x = p.x_T.clone()
        for k in sch.timesteps:
            x = sch.step(eps(x, k), k, x, eta=0.0).prev_sample
        return x, eps.calls

    return [(Det("diffusers DPMSolverMultistep 2M", "", {}, 1, 0, "x_eps", "linspace"), dpm(2)),
            (Det("diffusers DPMSolverMultistep 3M", "", {}, 1, 0, "x_eps", "linspace"), dpm(3)),
            (Det("diffusers DDIMScheduler", "", {}, 1, 0, "x_eps", "trailing"), ddim)]


# -- peers: k-diffusion ---------------------------------------------------------------
class KDenoiser:
    """k-diffusion's denoiser D(x~, sigma) for the VPSDE: x~ = x/alpha, sigma = std/alpha,
    D = x0 = (x + std^2 score(x, t))/alpha with t the VPSDE time of sigma."""

    def __init__(self, p: Problem):
        self.p, self.calls = p, 0

    def __call__(self, xs: Tensor, sigma: Tensor) -> Tensor:
        self.calls += 1
        sigma = sigma.to(torch.float64).reshape(-1).expand(xs.shape[0])
        t = vp_time_from_alphabar(self.p.sde, 1.0 / (1.0 + sigma ** 2)).to(xs.dtype)
        alpha, std = self.p.sde._marginal_coeffs(t)
        x = alpha[:, None] * xs
        return (x + std[:, None] ** 2 * self.p.score(x, t)) / alpha[:, None]


def kdiff_sigmas(p: Problem, n: int) -> Tensor:
    import k_diffusion.sampling as K
    ends = torch.tensor([EPS, p.sde.T], dtype=torch.float64)
    alpha, std = p.sde.marginal_coeffs(ends)
    s_min, s_max = (std / alpha).tolist()
    return K.get_sigmas_karras(n, s_min, s_max, rho=7.0).to(torch.float64).to(p.x_T.device)


def kdiff_run(p: Problem, name: str, n: int, seed: Optional[int] = None,
              x_T: Optional[Tensor] = None) -> Tuple[Tensor, int]:
    """Run k_diffusion.sampling.<name> with n sigmas (Karras grid, then 0): the output is x0."""
    import k_diffusion.sampling as K
    x_T = p.x_T if x_T is None else x_T
    den = KDenoiser(p)
    sig = kdiff_sigmas(p, n)
    alpha_T = float(p.sde.marginal_coeffs(torch.tensor([p.sde.T], dtype=torch.float64))[0])
    if seed is not None:
        torch.manual_seed(seed)
    x = getattr(K, name)(den, x_T / alpha_T, sig, disable=True)
    return x, den.calls


def kdiff_det(p: Problem) -> List[Tuple[Det, Callable[[int], Tuple[Tensor, int]]]]:
    try:
        import k_diffusion.sampling  # noqa: F401
    except Exception:  # noqa: BLE001
        return []
    specs = [("k-diffusion sample_euler", "sample_euler", 1, 0),
             ("k-diffusion sample_heun", "sample_heun", 2, -1),
             ("k-diffusion sample_dpmpp_2m", "sample_dpmpp_2m", 1, 0)]
    out = []
    for label, name, per, off in specs:
        spec = Det(label, name, {}, per, off, "x0", "karras", min_steps=2)
        out.append((spec, lambda nfe, name=name, spec=spec: kdiff_run(p, name, spec.grid_steps(nfe))))
    return out


def deterministic_rows(p: Problem) -> List[Row]:
    rows = []
    for spec in OURS_DET:
        row = Row(spec.label, "scoresde", spec.grid, spec.target)
        for nfe in NFES:
            row.cells[nfe] = run_ours_det(p, spec, nfe)
        rows.append(row)
    for source, peers in (("diffusers", diffusers_det(p)), ("k-diffusion", kdiff_det(p))):
        for spec, run in peers:
            row = Row(spec.label, source, spec.grid, spec.target)
            for nfe in NFES:
                x, n = run(nfe)
                row.cells[nfe] = (n, rms_error(x, p.refs[spec.target]))
            rows.append(row)
    return rows


# -- stochastic samplers: weak error ---------------------------------------------------
@dataclass
class Stoch:
    label: str
    solver: str
    opts: dict
    per_step: int
    end: str            # "eps" or "0": the time whose exact law the samples should follow


OURS_STOCH = [
    Stoch("Euler–Maruyama", "euler_maruyama", {}, 1, "eps"),
    Stoch("ancestral (DDPM update)", "ancestral", {}, 1, "eps"),
    Stoch("PC (reverse diffusion + Langevin, snr 0.16)", "pc", {}, 2, "eps"),
    Stoch("DDIM eta = 1", "ddim", {"eta": 1.0}, 1, "0"),
]


def energy_distance(x: Tensor, y: Tensor, chunk: int = 2048) -> float:
    """Szekely-Rizzo energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (U-statistics)."""
    def mean_dist(a: Tensor, b: Tensor, same: bool) -> float:
        total = 0.0
        for i in range(0, a.shape[0], chunk):
            total += float(torch.cdist(a[i:i + chunk], b).sum())
        n = a.shape[0] * b.shape[0] - (a.shape[0] if same else 0)
        return total / n
    return 2 * mean_dist(x, y, False) - mean_dist(x, x, True) - mean_dist(y, y, True)


def weak_metrics(x: Tensor, law: sd.GaussianMixture, exact: Tensor) -> Tuple[float, float, float]:
    m, c = law.mean.to(x), law.covariance.to(x)
    xm = x.mean(0)
    xc = torch.cov(x.T)
    return (float((xm - m).norm() / math.sqrt(x.shape[1])),
            float((xc - c).norm() / c.norm()),
            energy_distance(x, exact))


@dataclass
class WeakRow:
    label: str
    source: str
    end: str
    cells: Dict[int, Tuple[int, Tuple[float, float, float]]] = field(default_factory=dict)


def weak_rows(p: Problem, cfg: C.Config) -> Tuple[List[WeakRow], Dict[str, Tuple[float, float, float]], int]:
    n = 2000 if cfg.quick else 10000
    nfes = WEAK_NFES_QUICK if cfg.quick else WEAK_NFES_FULL
    dev = p.x_T.device
    laws = {"eps": p.oracle.marginal(EPS), "0": p.oracle}
    exact = {k: law.sample(n, generator=C.seeded(10 + i), dtype=torch.float64).to(dev)
             for i, (k, law) in enumerate(laws.items())}
    floors = {}   # RMS of each statistic over independent exact sample sets: the noise level
    for i, (k, law) in enumerate(laws.items()):
        reps = [weak_metrics(law.sample(n, generator=C.seeded(100 * i + 20 + j),
                                        dtype=torch.float64).to(dev), law, exact[k])
                for j in range(FLOOR_SETS)]
        floors[k] = tuple(math.sqrt(sum(r[m] ** 2 for r in reps) / len(reps)) for m in range(3))
    x_T = p.sde.prior_sampling((n, p.dim), generator=C.seeded(3), dtype=torch.float64).to(dev)
    rows = []
    for spec in OURS_STOCH:
        row = WeakRow(spec.label, "scoresde", spec.end)
        for nfe in nfes:
            res = sd.sample(p.score, p.sde, (n, p.dim), spec.solver, x_T=x_T,
                            steps=spec.per_step * max(1, round(nfe / spec.per_step)),
                            generator=C.seeded(4, dev), **spec.opts)
            row.cells[nfe] = (res.nfe, weak_metrics(res.x, laws[spec.end], exact[spec.end]))
        rows.append(row)
    try:
        from diffusers import DDPMScheduler
    except Exception:  # noqa: BLE001
        DDPMScheduler = None
    if DDPMScheduler is not None:
        row = WeakRow("diffusers DDPMScheduler (trailing)", "diffusers", "0")
        betas = diffusers_betas(p.sde)
        for nfe in nfes:
            sch = DDPMScheduler(num_train_timesteps=1000, trained_betas=betas, clip_sample=False,
                                variance_type="fixed_small", timestep_spacing="trailing")
            sch.set_timesteps(nfe, device=dev)
            eps = DiffusersEps(p, sch)
            x, g = x_T.clone(), C.seeded(4, dev)
            for k in sch.timesteps:
                x = sch.step(eps(x, k), k, x, generator=g).prev_sample
            row.cells[nfe] = (eps.calls, weak_metrics(x, laws["0"], exact["0"]))
        rows.append(row)
    try:
        import k_diffusion.sampling  # noqa: F401
        have_k = True
    except Exception:  # noqa: BLE001
        have_k = False
    if have_k:
        row = WeakRow("k-diffusion sample_euler_ancestral", "k-diffusion", "0")
        for nfe in nfes:
            x, calls = kdiff_run(p, "sample_euler_ancestral", nfe, seed=4, x_T=x_T)
            row.cells[nfe] = (calls, weak_metrics(x, laws["0"], exact["0"]))
        rows.append(row)
    return rows, floors, n


# -- the section ----------------------------------------------------------------------
def _plot_det(cfg: C.Config, p: Problem, rows: List[Row]) -> str:
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = {"scoresde": "-", "diffusers": "--", "k-diffusion": ":"}
    ax.set_prop_cycle(color=[plt.cm.tab20(i % 20) for i in range(len(rows))])
    for r in rows:
        xs = [r.cells[n][0] for n in NFES]
        ys = [max(r.cells[n][1], 1e-16) for n in NFES]
        ax.loglog(xs, ys, styles[r.source], marker="o", ms=3, label=r.label)
    ax.set_xlabel("NFE")
    ax.set_ylabel("RMS error / sqrt(D)")
    ax.set_title(f"PF-ODE global error, {p.key} (exact score, float64)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return C.save_figure(fig, cfg, f"bench_accuracy_{p.key}")


def _plot_weak(cfg: C.Config, results) -> str:
    plt = C.pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5),
                             constrained_layout=True)
    for ax, (p, rows, floors, n) in zip(axes, results):
        for r in rows:
            nfes = sorted(r.cells)
            ax.plot([r.cells[k][0] for k in nfes], [r.cells[k][1][2] for k in nfes],
                    "-" if r.source == "scoresde" else "--", marker="o", ms=3, label=r.label)
        noise = max(floors["eps"][2], floors["0"][2])
        ax.axhspan(-noise, noise, color="k", alpha=0.12,
                   label="sampling noise (RMS over exact sample sets)")
        ax.set_xscale("log")
        # the U-statistic is unbiased and can be negative: symmetric log scale
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("NFE")
        ax.set_ylabel("energy distance")
        ax.set_title(f"weak error, {p.key}, {n} samples")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return C.save_figure(fig, cfg, "bench_weak")


def _peer_lines() -> List[str]:
    out = []
    v = C.version_of("diffusers")
    if v is None:
        out.append("- diffusers is not installed: its rows are skipped (`pip install -e .[bench]` "
                   "adds them).")
    else:
        out.append(f"- diffusers {v}: `DPMSolverMultistepScheduler` (`dpmsolver++`, orders 2 "
                   "and 3, `timestep_spacing='linspace'`, `final_sigmas_type='sigma_min'`, "
                   "`lower_order_final=True`), `DDIMScheduler` (`timestep_spacing='trailing'`, "
                   "`set_alpha_to_one=False`, eta 0) and, for the weak errors, `DDPMScheduler` "
                   "(`trailing`, `fixed_small`), all with `trained_betas` such that "
                   "`alphas_cumprod[k]` is the VPSDE's alphabar at t_k = (k + 1)/1000, and the "
                   "exact eps evaluated at the VPSDE time whose alphabar is the scheduler's own "
                   "(float32) `alphas_cumprod[k]`. Their grids run from t = 1 to t_0 = 1e-3, the "
                   "same end time as ours; diffusers keeps the schedule in float32 and "
                   "`DPMSolverMultistepScheduler` steps in float32, which floors its error near "
                   "1e-6. Its grid is uniform in t: the row 'DPM-Solver++(2M), uniform grid' is "
                   "ours on the same kind of grid.")
    v = C.version_of("k_diffusion")
    if v is None:
        out.append("- k-diffusion is not installed: its rows are skipped (with it installed, "
                   "`k_diffusion.sampling.sample_euler`, `sample_heun`, `sample_dpmpp_2m` and "
                   "`sample_euler_ancestral` run on the Karras grid with the exact denoiser).")
    else:
        out.append(f"- k-diffusion {v}: `sample_euler`, `sample_heun`, `sample_dpmpp_2m` (and "
                   "`sample_euler_ancestral` for the weak errors) on `get_sigmas_karras(n, "
                   "sigma(eps), sigma(T), rho=7)` (ending at sigma = 0, so compared with the "
                   "denoised reference), with the exact denoiser D(x/alpha, sigma) = x0 of the "
                   "VPSDE at the time of sigma = std/alpha.")
    return out


def run(cfg: C.Config) -> C.Section:
    md: List[str] = ["## 1. Accuracy against NFE", "",
                     "Every solver integrates the probability-flow ODE of `VPSDE()` (beta 0.1 "
                     "to 20) in float64 with the exact score, from the same seeded x_T at t = 1 "
                     f"to eps = {EPS:g}, with its own default grid and options. Error: the "
                     "RMS over the batch of ||x - x_ref||_2 / sqrt(D), where x_ref is a dopri5 "
                     f"solve at rtol = atol = {REF_TOL:g} from the same x_T. `ddim` and "
                     "`heun_karras` end with a denoising update to t = 0 (x0 predicted at eps), "
                     "so they are compared with the reference's Tweedie denoise (x + std^2 "
                     "score)/alpha at eps ('denoised x(eps)'); all others with x(eps). NFE "
                     "targets 5, 10, 20, 50, 100, matched as closely as each solver's steps "
                     "allow; the cells give the NFE actually counted.", "",
                     "Peers, on the same problems with the same exact scores:", ""] + _peer_lines() + [""]
    targets = []
    problems = make_problems(cfg)
    weak_results = []
    headline = {}
    for p in problems:
        C.log(f"[accuracy] {p.key}: reference solve")
        build_references(p)
        C.log(f"[accuracy] {p.key}: deterministic samplers")
        rows = deterministic_rows(p)
        img = _plot_det(cfg, p, rows)
        md += [f"### {p.title}", "",
               f"Batch {p.x_T.shape[0]}, x_T ~ N(0, I) seeded, VPSDE(0.1, 20), float64, end time "
               f"eps = {EPS:g}; {p.score_note}; reference: {p.ref_note}.", ""]
        headers = ["solver", "source", "grid", "compared with"] + [f"NFE≈{n}" for n in NFES]
        table = [[r.label, r.source, r.grid,
                  "x(eps)" if r.target == "x_eps" else "denoised x(eps)"]
                 + [f"{C.fmt_e(r.cells[n][1])} ({r.cells[n][0]})" for n in NFES] for r in rows]
        md += ["Cells: RMS error / sqrt(D) (NFE counted).", "",
               C.md_table(headers, table, "llll" + "r" * len(NFES)), "", f"![{p.key}]({img})", ""]
        by = {r.label: r for r in rows}
        headline[p.key] = (by["DPM-Solver++(2M)"].cells[10], by["DDIM"].cells[10])
        C.log(f"[accuracy] {p.key}: stochastic samplers")
        weak_results.append((p,) + weak_rows(p, cfg))

    md += ["### Headline: DPM-Solver++(2M) against DDIM at 10 NFE", "",
           "Target: the 2M error at 10 NFE is at most half of DDIM's at 10 NFE.", ""]
    hrows = []
    for key, ((n2, e2), (nd, ed)) in headline.items():
        ok = e2 <= 0.5 * ed
        hrows.append([key, f"{C.fmt_e(e2, 2)} ({n2})", f"{C.fmt_e(ed, 2)} ({nd})",
                      C.fmt_f(e2 / ed, 3), C.verdict(ok)])
        targets.append((f"DPM-Solver++(2M) ≤ 0.5 × DDIM at 10 NFE, {key}", ok,
                        f"ratio {e2 / ed:.3f}"))
    md += [C.md_table(["problem", "DPM-Solver++(2M) error (NFE)", "DDIM error (NFE)", "ratio",
                       "target ≤ 0.5"], hrows), ""]

    md += ["### Stochastic samplers: weak error", ""]
    for p, rows, floors, n in weak_results:
        nfes = sorted(rows[0].cells)
        md += [f"**{p.key}**, {n} samples from a seeded prior draw, each sampler with "
               "`generator=torch.Generator().manual_seed(4)`. Each cell: energy distance / "
               "mean error / covariance error (actual NFE). Mean error = ||mean - exact|| / "
               "sqrt(D); covariance error = ||cov - exact||_F / ||exact||_F; energy "
               "distance (U-statistic, unbiased, so it can be negative) against an exact "
               "sample set of the same size. The floor rows score independent exact sample "
               f"sets the same way (root mean square over {FLOOR_SETS} sets): values within "
               "the floor are sampling noise.", ""]
        headers = ["sampler", "source", "law at"] + [f"NFE≈{k}" for k in nfes]
        table = []
        for end in ("eps", "0"):
            fe = floors[end]
            table.append([f"floor (noise): exact samples at t = {end}", "–",
                          "eps" if end == "eps" else "0"]
                         + [f"{C.fmt_e(fe[2])} / {C.fmt_e(fe[0])} / {C.fmt_e(fe[1])}"] * len(nfes))
        for r in rows:
            table.append([r.label, r.source, "eps" if r.end == "eps" else "0"]
                         + [f"{C.fmt_e(r.cells[k][1][2])} / {C.fmt_e(r.cells[k][1][0])} / "
                            f"{C.fmt_e(r.cells[k][1][1])} ({r.cells[k][0]})" for k in nfes])
        md += [C.md_table(headers, table, "lll" + "r" * len(nfes)), ""]
    img = _plot_weak(cfg, weak_results)
    md += [f"![weak error]({img})", ""]
    return {"markdown": "\n".join(md), "targets": targets}
