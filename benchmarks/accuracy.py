"""Table 1: accuracy against NFE with exact scores (float64, VPSDE).

Deterministic samplers: global error of the probability-flow ODE solution against a dopri5
solve at rtol = atol = 1e-10 from the same x_T. Stochastic samplers: weak error (mean,
covariance, energy distance) against the exact law at their end time. Peers (diffusers,
k-diffusion) run on the same problem with the same exact noise prediction eps = -std score.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
import types
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

import scoresde as sd
from scoresde.data import gmm_oracle
from scoresde.samplers.registry import SOLVERS

from . import _common as C
from .kdiffusion_loader import INSTALL as KDIFF_INSTALL
from .kdiffusion_loader import installed_version as kdiffusion_version
from .kdiffusion_loader import load_kdiffusion_sampling

EPS = 1e-3                  # end time of every sampler here (ddim/heun_karras then denoise to t = 0)
REF_TOL = 1e-10             # dopri5 reference
NFES = (5, 10, 20, 50, 100)  # the 5, 10, 20, 50, and 100 for the order fits
ORDER_NFES = (20, 50, 100)   # the cells the fitted order uses: the asymptotic range
TIME_REPEATS_QUICK, TIME_REPEATS_FULL = 3, 5   # each solve's wall time: the fastest run
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


def _ours(label: str, solver: str, opts: dict, per_step: int, offset: int, target: str,
          min_steps: int = 1) -> Det:
    """A scoresde row; its grid is the one the solver runs on: opts' or the registry's default."""
    grid = opts.get("grid", SOLVERS[solver].options["grid"].default)
    return Det(label, solver, opts, per_step, offset, target, grid, min_steps)


OURS_DET = [
    _ours("DDIM", "ddim", {}, 1, 0, "x0"),
    _ours("DPM-Solver-1", "dpm_solver", {"order": 1, "method": "singlestep"}, 1, 0, "x_eps"),
    _ours("DPM-Solver-2 (singlestep)", "dpm_solver", {"order": 2, "method": "singlestep"}, 2,
          0, "x_eps"),
    _ours("DPM-Solver-3 (singlestep)", "dpm_solver", {"order": 3, "method": "singlestep"}, 3,
          0, "x_eps"),
    _ours("DPM-Solver-2 (multistep)", "dpm_solver", {"order": 2, "method": "multistep"}, 1, 0,
          "x_eps"),
    _ours("DPM-Solver-3 (multistep)", "dpm_solver", {"order": 3, "method": "multistep"}, 1, 0,
          "x_eps"),
    _ours("DPM-Solver++(2M)", "dpm_solver++", {"order": 2}, 1, 0, "x_eps"),
    _ours("DPM-Solver++(3M)", "dpm_solver++", {"order": 3}, 1, 0, "x_eps"),
    # diffusers' default grid is uniform in t: this row is the like-for-like comparison
    _ours("DPM-Solver++(2M), uniform grid", "dpm_solver++", {"order": 2, "grid": "uniform"}, 1,
          0, "x_eps"),
    _ours("UniPC-2 (unipc)", "unipc", {"order": 2}, 1, 0, "x_eps"),
    _ours("UniPC-3 (unipc)", "unipc", {"order": 3}, 1, 0, "x_eps"),
    _ours("Karras Heun", "heun_karras", {}, 2, -1, "x0", min_steps=2),
    _ours("Euler (ode_euler)", "ode_euler", {}, 1, 0, "x_eps"),
    _ours("Heun (ode_heun)", "ode_heun", {}, 2, 0, "x_eps"),
    _ours("RK4 (ode_rk4)", "ode_rk4", {}, 4, 0, "x_eps"),
]


@dataclass
class Cell:
    nfe: int            # network evaluations counted by the wrapper around the score
    err: float          # rms_error against the row's target
    sec: float          # wall time of the solve: the fastest of the timing repeats


@dataclass
class Row:
    label: str
    source: str                       # "scoresde", "diffusers", "k-diffusion"
    grid: str
    target: str
    cells: Dict[int, Cell] = field(default_factory=dict)   # target NFE -> Cell


Runner = Callable[[int], Tuple[Tensor, int]]   # target NFE -> (final state, NFE counted)


def measure(run: Runner, nfe: int, target: Tensor, device: torch.device) -> Cell:
    """One timed solve: its NFE, error and wall time."""
    C.sync(device)
    t0 = time.perf_counter()
    x, n = run(nfe)
    C.sync(device)
    return Cell(n, rms_error(x, target), time.perf_counter() - t0)


def measure_all(jobs: List[Tuple[Runner, object, Tensor]], repeats: int,
                device: torch.device) -> List[Cell]:
    """measure() every (run, argument, target) job ``repeats`` times, in rounds over all jobs
    (so that a burst of load on a shared machine does not hit every repeat of one job);
    the solves are deterministic: keep the first round's error and NFE, the fastest time."""
    cells = [measure(run, arg, target, device) for run, arg, target in jobs]
    for _ in range(repeats - 1):
        for cell, (run, arg, target) in zip(cells, jobs):
            cell.sec = min(cell.sec, measure(run, arg, target, device).sec)
    return cells


def ours_det(p: Problem, spec: Det) -> Runner:
    def run(nfe: int) -> Tuple[Tensor, int]:
        res = sd.sample(p.score, p.sde, tuple(p.x_T.shape), spec.solver, x_T=p.x_T,
                        steps=spec.steps_for(nfe), **spec.opts)
        return res.x, res.nfe
    return run


# -- peers: the same exact score in their conventions ---------------------------------
class SigmaSpace:
    """The VPSDE in sigma space (Karras et al. 2022, Sec. 2 and Table 1; k-diffusion's and
    diffusers' sigma schedulers' convention), from the library's one conversion
    (scoresde.interop.kdiffusion, docs/interop.md):

        x_t = alpha(t) x0 + std(t) z      <->      x~ = x_t / alpha = x0 + sigma z,
        sigma = std / alpha (sd.sigma_from_time), t(sigma) by sd.time_from_sigma (closed
        form for the linear VPSDE), D(x~; sigma) = E[x0 | x~] by sd.to_denoiser (Tweedie),
        and for diffusers' sigma schedulers, whose model input is x~ / sqrt(1 + sigma^2) =
        x_t, the noise prediction eps(x_t, t) = -std score(x_t, t).

    ``denoiser`` and ``eps`` count their calls: the NFE reported is ``calls``.
    """

    def __init__(self, p: Problem):
        self.p, self.calls = p, 0
        self._denoiser = sd.to_denoiser(p.score, p.sde)

    def sigma(self, t: float) -> float:
        return float(sd.sigma_from_time(self.p.sde, t))

    def time(self, sigma: Tensor, batch: int) -> Tensor:
        return sd.time_from_sigma(self.p.sde, sigma.to(torch.float64).reshape(-1).expand(batch))

    def denoiser(self, xs: Tensor, sigma: Tensor) -> Tensor:
        """k-diffusion's model(x~, sigma) -> x0."""
        self.calls += 1
        return self._denoiser(xs, sigma)

    def eps(self, x_in: Tensor, sigma: Tensor) -> Tensor:
        """diffusers' model(scale_model_input(x~), t(sigma)) -> eps."""
        self.calls += 1
        return self.p.eps_model(x_in, self.time(sigma, x_in.shape[0]).to(x_in.dtype))


# diffusers
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
        abar = scheduler.alphas_cumprod.to(torch.float64)
        self.t_of_k = sd.time_from_sigma(p.sde, ((1 - abar) / abar).sqrt()).to(p.x_T.device)
        self.calls = 0

    def __call__(self, x: Tensor, k) -> Tensor:
        self.calls += 1
        t = self.t_of_k[int(k)].expand(x.shape[0]).to(x.dtype)
        return self.p.eps_model(x, t)


def diffusers_det(p: Problem) -> List[Tuple[Det, Runner]]:
    try:
        import diffusers as D
    except Exception:  # noqa: BLE001
        return []
    betas = diffusers_betas(p.sde)
    dev = p.x_T.device
    common = dict(num_train_timesteps=1000, trained_betas=betas)

    def alphabar_loop(make: Callable[[], object], **step_kw) -> Runner:
        """Schedulers on x_t with integer timesteps (DDIM, DPMSolverMultistep, UniPC)."""
        def run(nfe: int) -> Tuple[Tensor, int]:
            sch = make()
            sch.set_timesteps(nfe, device=dev)
            eps = DiffusersEps(p, sch)
            x = p.x_T.clone()
            for k in sch.timesteps:
                x = sch.step(eps(x, k), k, x, **step_kw).prev_sample
            return x, eps.calls
        return run

    def sigma_loop(make: Callable[[], object], spec: Det) -> Runner:
        """Schedulers on x~ = x_t/alpha (Heun, LMS): start from x~_T = x_T sqrt(1 + sigma_max^2)
        with the scheduler's own sigma_max, evaluate eps at the scheduler's current sigma."""
        def run(nfe: int) -> Tuple[Tensor, int]:
            sch = make()
            sch.set_timesteps(spec.grid_steps(nfe), device=dev)
            space = SigmaSpace(p)
            x = p.x_T * torch.sqrt(1.0 + sch.sigmas[0].to(torch.float64) ** 2)
            for k in sch.timesteps:
                x_in = sch.scale_model_input(x, k)
                x = sch.step(space.eps(x_in, sch.sigmas[sch.step_index]), k, x).prev_sample
            return x, space.calls
        return run

    def dpm(order: int):
        return lambda: D.DPMSolverMultistepScheduler(
            **common, solver_order=order, algorithm_type="dpmsolver++",
            timestep_spacing="linspace", final_sigmas_type="sigma_min", lower_order_final=True)

    def unipc(order: int):
        return lambda: D.UniPCMultistepScheduler(
            **common, solver_order=order, timestep_spacing="linspace",
            final_sigmas_type="sigma_min", lower_order_final=True)

    ddim = lambda: D.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False,  # noqa: E731
                                   timestep_spacing="trailing")
    heun = Det("diffusers HeunDiscreteScheduler", "", {}, 2, -1, "x0", "linspace", min_steps=2)
    lms = Det("diffusers LMSDiscreteScheduler", "", {}, 1, 0, "x0", "linspace", min_steps=2)
    x_eps = lambda label, grid: Det(label, "", {}, 1, 0, "x_eps", grid)  # noqa: E731
    return [
        (x_eps("diffusers DDIMScheduler", "trailing"), alphabar_loop(ddim, eta=0.0)),
        (x_eps("diffusers DPMSolverMultistep 2M", "linspace"), alphabar_loop(dpm(2))),
        (x_eps("diffusers DPMSolverMultistep 3M", "linspace"), alphabar_loop(dpm(3))),
        (x_eps("diffusers UniPCMultistep, order 2", "linspace"), alphabar_loop(unipc(2))),
        (x_eps("diffusers UniPCMultistep, order 3", "linspace"), alphabar_loop(unipc(3))),
        (heun, sigma_loop(lambda: D.HeunDiscreteScheduler(**common), heun)),
        (lms, sigma_loop(lambda: D.LMSDiscreteScheduler(**common), lms)),
    ]


# k-diffusion
def kdiffusion() -> Optional[types.ModuleType]:
    """k_diffusion.sampling loaded alone (benchmarks/kdiffusion_loader.py), or None."""
    try:
        return load_kdiffusion_sampling()
    except ImportError:
        return None


@contextlib.contextmanager
def default_float64():
    """k-diffusion builds grids and DPM-Solver times with torch.linspace/torch.tensor in the
    default dtype: make it float64 for the call, like the state."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# (label, k_diffusion.sampling function, NFE per noise level, offset, options): on
# get_sigmas_karras(n) then 0, n noise levels, NFE = per * n + offset
KDIFF_GRID = [
    ("k-diffusion sample_euler", "sample_euler", 1, 0, {}),
    ("k-diffusion sample_heun", "sample_heun", 2, -1, {}),
    ("k-diffusion sample_lms", "sample_lms", 1, 0, {}),
    ("k-diffusion sample_dpmpp_2m", "sample_dpmpp_2m", 1, 0, {}),
    ("k-diffusion sample_dpmpp_3m_sde, eta = 0", "sample_dpmpp_3m_sde", 1, 0, {"eta": 0.0}),
]
KDIFF_TOLS = (1e-1, 1e-2, 1e-3, 1e-4)     # sample_dpm_adaptive's rtol = atol


def kdiff_run(p: Problem, name: str, n: int, x_T: Optional[Tensor] = None,
              seed: Optional[int] = None, **opts) -> Tuple[Tensor, int]:
    """k_diffusion.sampling.<name> on n Karras noise levels from sigma(T) to sigma(eps), then
    0: the output is x0."""
    K = kdiffusion()
    space = SigmaSpace(p)
    x_T = p.x_T if x_T is None else x_T
    with default_float64():
        sig = K.get_sigmas_karras(n, space.sigma(EPS), space.sigma(p.sde.T), rho=7.0,
                                  device=x_T.device)
        if seed is not None:
            torch.manual_seed(seed)
        x = getattr(K, name)(space.denoiser, x_T * math.sqrt(1.0 + sig[0].item() ** 2), sig,
                             disable=True, **opts)
    return x, space.calls


def kdiff_dpm(p: Problem, name: str, **opts) -> Tuple[Tensor, int]:
    """sample_dpm_fast / sample_dpm_adaptive from sigma(T) to sigma(eps) (no final
    denoising): returns x_eps = alpha(eps) x~."""
    K = kdiffusion()
    space = SigmaSpace(p)
    s_min, s_max = space.sigma(EPS), space.sigma(p.sde.T)
    with default_float64():
        xs = getattr(K, name)(space.denoiser, p.x_T * math.sqrt(1.0 + s_max ** 2), s_min, s_max,
                              disable=True, **opts)
    return xs / math.sqrt(1.0 + s_min ** 2), space.calls


def kdiff_det(p: Problem) -> List[Tuple[Det, Runner]]:
    if kdiffusion() is None:
        return []
    out = []
    for label, name, per, off, opts in KDIFF_GRID:
        spec = Det(label, name, opts, per, off, "x0", "karras", min_steps=2)
        out.append((spec, lambda nfe, name=name, spec=spec, opts=opts:
                    kdiff_run(p, name, spec.grid_steps(nfe), **opts)))
    # DPM-Solver-fast: orders 3, ..., 3 then the remainder; NFE exactly n; steps uniform in
    # log sigma (= uniform in lambda)
    out.append((Det("k-diffusion sample_dpm_fast", "sample_dpm_fast", {}, 1, 0, "x_eps", "logsnr"),
                lambda nfe: kdiff_dpm(p, "sample_dpm_fast", n=nfe)))
    return out


def adaptive_rows(p: Problem, repeats: int) -> List[Tuple[str, str, List[Tuple[float, Cell]]]]:
    """(label, source, [(tol, cell)]): k-diffusion's sample_dpm_adaptive (order 3, rtol =
    atol = tol) and ours (sample(solver='ode', method=..., rtol = atol = tol))."""
    def ours(method: str) -> Runner:
        def run(tol: float) -> Tuple[Tensor, int]:
            res = sd.sample(p.score, p.sde, tuple(p.x_T.shape), "ode", x_T=p.x_T, method=method,
                            rtol=tol, atol=tol, eps=EPS, max_steps=100_000)
            return res.x, res.nfe
        return run

    runs = [(f"ode, method='{m}'", "scoresde", ours(m)) for m in ("bosh3", "dopri5")]
    if kdiffusion() is not None:
        runs.append(("k-diffusion sample_dpm_adaptive (order 3)", "k-diffusion",
                     lambda tol: kdiff_dpm(p, "sample_dpm_adaptive", order=3, rtol=tol, atol=tol)))
    cells = measure_all([(run, tol, p.refs["x_eps"]) for _, _, run in runs for tol in KDIFF_TOLS],
                        repeats, p.x_T.device)
    k = len(KDIFF_TOLS)
    return [(label, source, list(zip(KDIFF_TOLS, cells[i * k:(i + 1) * k])))
            for i, (label, source, _) in enumerate(runs)]


def deterministic_rows(p: Problem, repeats: int) -> List[Row]:
    runs = [(spec, "scoresde", ours_det(p, spec)) for spec in OURS_DET]
    runs += [(spec, "diffusers", run) for spec, run in diffusers_det(p)]
    runs += [(spec, "k-diffusion", run) for spec, run in kdiff_det(p)]
    cells = iter(measure_all([(run, nfe, p.refs[spec.target]) for spec, _, run in runs
                              for nfe in NFES], repeats, p.x_T.device))
    return [Row(spec.label, source, spec.grid, spec.target, {nfe: next(cells) for nfe in NFES})
            for spec, source, _ in runs]


def score_eval_seconds(p: Problem, repeats: int = 20) -> float:
    """Median wall time of one exact score evaluation on the problem's batch."""
    t = torch.full((p.x_T.shape[0],), 0.5, dtype=p.x_T.dtype, device=p.x_T.device)
    return C.median_time(lambda: p.score(p.x_T, t), p.x_T.device, repeats, warmup=2)


def fitted_order(row: Row) -> float:
    """-slope of the least-squares line through (log NFE, log error) over the cells with a
    target NFE in ORDER_NFES (the asymptotic range)."""
    pts = [(math.log(c.nfe), math.log(c.err)) for n, c in row.cells.items()
           if n in ORDER_NFES and c.err > 0]
    if len(pts) < 2:
        return math.nan
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return -sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def time_ratio(row: Row, base: Row) -> float:
    """Median over the NFE targets of (row's seconds per NFE) / (base's seconds per NFE)."""
    return statistics.median((c.sec / c.nfe) / (base.cells[n].sec / base.cells[n].nfe)
                             for n, c in row.cells.items())


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
    if kdiffusion() is not None:
        row = WeakRow("k-diffusion sample_euler_ancestral", "k-diffusion", "0")
        for nfe in nfes:
            x, calls = kdiff_run(p, "sample_euler_ancestral", nfe, seed=4, x_T=x_T)
            row.cells[nfe] = (calls, weak_metrics(x, laws["0"], exact["0"]))
        rows.append(row)
    return rows, floors, n


# -- the section ----------------------------------------------------------------------
def _plot_det(cfg: C.Config, p: Problem, rows: List[Row], adaptive) -> str:
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(8, 6.5))
    styles = {"scoresde": "-", "diffusers": "--", "k-diffusion": ":"}
    n = len(rows) + len(adaptive)
    ax.set_prop_cycle(color=[plt.cm.tab20(i % 20) if i < 20 else plt.cm.tab20b(i % 20)
                             for i in range(n)])
    for r in rows:
        xs = [r.cells[k].nfe for k in NFES]
        ys = [max(r.cells[k].err, 1e-16) for k in NFES]
        ax.loglog(xs, ys, styles[r.source], marker="o", ms=3, label=r.label)
    for label, source, cells in adaptive:
        ax.loglog([c.nfe for _, c in cells], [max(c.err, 1e-16) for _, c in cells],
                  styles[source], marker="s", ms=5, lw=2, label=f"{label} (adaptive)")
    ax.set_xlabel("NFE")
    ax.set_ylabel("RMS error / sqrt(D)")
    ax.set_title(f"PF-ODE global error, {p.key} (exact score, float64): "
                 "solid scoresde, dashed diffusers, dotted k-diffusion")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
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
        out.append(
            f"- diffusers {v}, every scheduler with `trained_betas` such that `alphas_cumprod[k]` "
            "is the VPSDE's alphabar at t_k = (k + 1)/1000 (one discrete schedule for all), "
            "from t = 1 to the same end as ours: `DDIMScheduler` (`timestep_spacing='trailing'`, "
            "`set_alpha_to_one=False`, eta 0), `DPMSolverMultistepScheduler` (`dpmsolver++`, "
            "orders 2 and 3) and `UniPCMultistepScheduler` (bh2, `predict_x0`, orders 2 and 3), "
            "both `timestep_spacing='linspace'`, `final_sigmas_type='sigma_min'`, "
            "`lower_order_final=True`: these end at t_0 = 1e-3 (compared with x(eps)) and get "
            "the exact eps at the VPSDE time whose alphabar is the scheduler's own (float32) "
            "`alphas_cumprod[k]`. `HeunDiscreteScheduler` and `LMSDiscreteScheduler` (order 4), "
            "`linspace`, step x~ in sigma space down to sigma = 0 (compared with the denoised "
            "reference): the loop starts from x~_T = x_T sqrt(1 + sigma_max^2) with the "
            "scheduler's sigma_max, and the exact eps is evaluated at the time of the "
            "scheduler's current `sigmas[step_index]` (the conversion below). For the weak "
            "errors, `DDPMScheduler` (`trailing`, `fixed_small`). diffusers keeps the schedule "
            "in float32 and the multistep schedulers step in float32, which floors their errors "
            "near 1e-6. Their grid is uniform in t: the row 'DPM-Solver++(2M), uniform grid' is "
            "ours on the same kind of grid.")
    v = kdiffusion_version()
    if v is None or kdiffusion() is None:
        out.append(f"- k-diffusion is not installed: its rows are skipped (`{KDIFF_INSTALL}` "
                   "adds them; its dependencies are not needed).")
    else:
        out.append(
            f"- k-diffusion {v} (installed with `{KDIFF_INSTALL}`; `k_diffusion/sampling.py` "
            "loaded alone by `benchmarks/kdiffusion_loader.py`, the package's `__init__` is "
            "never run): `sample_euler`, `sample_heun`, `sample_lms` (order 4), "
            "`sample_dpmpp_2m` and `sample_dpmpp_3m_sde` with eta = 0 (the DPM-Solver++(3M) "
            "ODE) on `get_sigmas_karras(n, sigma(eps), sigma(T), rho=7)` then 0 (compared with "
            "the denoised reference), and `sample_dpm_fast` (NFE exactly the budget, steps "
            "uniform in log sigma) and `sample_dpm_adaptive` (order 3) from sigma(T) to "
            "sigma(eps) (compared with x(eps)); `sample_euler_ancestral` for the weak errors. "
            "Called with the default dtype float64 (k-diffusion builds its grids with "
            "`torch.linspace`/`torch.tensor`).")
    out += ["", "The sigma-space conversion (`SigmaSpace` in benchmarks/accuracy.py, on the "
            "library's `sd.time_from_sigma` and `sd.to_denoiser`, docs/interop.md): x_t = alpha x0 + std z is x~ = x_t/alpha = x0 + sigma z with "
            "sigma = std/alpha; the VPSDE time of a sigma solves alphabar(t) = alpha^2 = "
            "1/(1 + sigma^2) (closed form for the linear schedule); k-diffusion's denoiser is "
            "D(x~; sigma) = (x_t + std^2 score(x_t, t))/alpha with x_t = alpha x~ (Tweedie's "
            "x0); diffusers' sigma schedulers feed x~/sqrt(1 + sigma^2) = x_t and get "
            "eps = -std score(x_t, t). Every peer's NFE is counted by a wrapper around the "
            "model, never from a formula."]
    return out


def _best(rows: List[Row], nfe: int, ours: bool) -> Row:
    return min((r for r in rows if (r.source == "scoresde") == ours),
               key=lambda r: r.cells[nfe].err)


def uses_defaults(spec: Det) -> bool:
    """True when every option the row passes (besides ``steps``) is the registry's default:
    the row is the solver as a user gets it by naming it."""
    options = SOLVERS[spec.solver].options
    return all(options[k].default == v for k, v in spec.opts.items())


FEW_STEP_NFES = (10, 20)   # item 2 of issue 12: ahead of every peer at few steps
FEW_STEP_FACTOR = 0.5


def few_step_rows(rows: List[Row], nfe: int) -> Tuple[Optional[Row], Row]:
    """The best scoresde row run with default options and at most ``nfe`` counted
    evaluations, and the best peer row in the same NFE column (its count may exceed ``nfe``
    by one where its steps cannot hit it: in the peer's favour)."""
    default_labels = {spec.label for spec in OURS_DET if uses_defaults(spec)}
    ours = [r for r in rows if r.source == "scoresde" and r.label in default_labels
            and r.cells[nfe].nfe <= nfe]
    peers = [r for r in rows if r.source != "scoresde"]
    best_ours = min(ours, key=lambda r: r.cells[nfe].err) if ours else None
    return best_ours, min(peers, key=lambda r: r.cells[nfe].err)


def run(cfg: C.Config) -> C.Section:
    repeats = TIME_REPEATS_QUICK if cfg.quick else TIME_REPEATS_FULL
    md: List[str] = ["## 1. Accuracy against NFE", "",
                     "Every solver integrates the probability-flow ODE of `VPSDE()` (beta 0.1 "
                     "to 20) in float64 with the exact score, from the same seeded x_T at t = 1 "
                     f"to eps = {EPS:g}, with its own default grid and options. Error: the "
                     "RMS over the batch of ||x - x_ref||_2 / sqrt(D), where x_ref is a dopri5 "
                     f"solve at rtol = atol = {REF_TOL:g} from the same x_T. `ddim`, "
                     "`heun_karras` and the peers that step to sigma = 0 end with a denoising "
                     "update to t = 0 (x0 predicted at eps), so they are compared with the "
                     "reference's Tweedie denoise (x + std^2 score)/alpha at eps ('denoised "
                     "x(eps)'); all others with x(eps). NFE targets "
                     f"{', '.join(str(n) for n in NFES)}, matched as closely as each solver's "
                     "steps allow; the cells give the NFE actually counted.", "",
                     "Peers, on the same problems with the same exact scores:", ""] + _peer_lines() + [""]
    targets = []
    problems = make_problems(cfg)
    weak_results = []
    headline = {}
    summaries = []
    for p in problems:
        C.log(f"[accuracy] {p.key}: reference solve")
        build_references(p)
        C.log(f"[accuracy] {p.key}: deterministic samplers and peers")
        rows = deterministic_rows(p, repeats)
        C.log(f"[accuracy] {p.key}: adaptive")
        adaptive = adaptive_rows(p, repeats)
        img = _plot_det(cfg, p, rows, adaptive)
        md += [f"### {p.title}", "",
               f"Batch {p.x_T.shape[0]}, x_T ~ N(0, I) seeded, VPSDE(0.1, 20), float64, end time "
               f"eps = {EPS:g}; {p.score_note}; reference: {p.ref_note}.", ""]
        headers = ["solver", "source", "grid", "compared with"] + [f"NFE≈{n}" for n in NFES]
        table = [[r.label, r.source, r.grid,
                  "x(eps)" if r.target == "x_eps" else "denoised x(eps)"]
                 + [f"{C.fmt_e(r.cells[n].err)} ({r.cells[n].nfe})" for n in NFES] for r in rows]
        md += ["Cells: RMS error / sqrt(D) (NFE counted).", "",
               C.md_table(headers, table, "llll" + "r" * len(NFES)), "", f"![{p.key}]({img})", ""]

        by = {r.label: r for r in rows}
        base = by["DPM-Solver++(2M)"]
        eval_sec = score_eval_seconds(p)
        md += [f"**Fitted orders and wall time, {p.key}.** Order: minus the least-squares slope "
               "of log error against log NFE over the cells at NFE≈"
               f"{', '.join(str(n) for n in ORDER_NFES)} (the asymptotic range; a row whose "
               "error has reached a float floor fits a lower slope). Wall time: each solve "
               f"run {repeats} times, in rounds over all the rows, the fastest kept; ms/NFE is "
               "the median over the NFE targets of seconds per counted evaluation; 'time/NFE vs "
               "ours' is the median over the NFE targets of that row's seconds per NFE over "
               "scoresde's `DPM-Solver++(2M)` at the same target, measured in this run. The "
               "exact score costs the same per call in every row (about "
               f"{1e3 * eval_sec:.2f} ms here), so the differences are the loops' own cost per "
               "step; with a network costing more per call the ratios move toward 1.", ""]
        srows = []
        for r in rows:
            ms = statistics.median(1e3 * c.sec / c.nfe for c in r.cells.values())
            srows.append([r.label, r.source, C.fmt_f(fitted_order(r), 2), C.fmt_f(ms, 3),
                          C.fmt_f(time_ratio(r, base), 2)])
        md += [C.md_table(["solver", "source", "fitted order", "ms / NFE", "time/NFE vs ours"],
                          srows, "llrrr"), ""]

        md += [f"**Adaptive step size, {p.key}**: rtol = atol = tol; cells: error (NFE counted, "
               "rejected steps included). scoresde's rows take the state's own norm; "
               "`sample_dpm_adaptive`'s controller measures the error of x~ = x/alpha (its "
               "rtol/atol defaults, 0.05/0.0078, are for images in [-1, 1]), so equal "
               "tolerances are not equal accuracy: compare the pairs (NFE, error). Plotted as "
               "squares.", ""]
        md += [C.md_table(["solver", "source"] + [f"tol {t:g}" for t in KDIFF_TOLS],
                          [[label, source] + [f"{C.fmt_e(c.err)} ({c.nfe})" for _, c in cells]
                           for label, source, cells in adaptive], "ll" + "r" * len(KDIFF_TOLS)), ""]
        summaries.append((p, rows))
        headline[p.key] = (by["DPM-Solver++(2M)"].cells[10], by["DDIM"].cells[10])
        C.log(f"[accuracy] {p.key}: stochastic samplers")
        weak_results.append((p,) + weak_rows(p, cfg))

    md += ["### Best of each at every NFE", "",
           "The fixed-step row with the smallest error at each NFE target, among scoresde's "
           "and among the peers' (the compared-with column of its table applies).", ""]
    brows = []
    for p, rows in summaries:
        for n in NFES:
            o, q = _best(rows, n, True), _best(rows, n, False)
            brows.append([p.key, n, f"{o.label}: {C.fmt_e(o.cells[n].err)} ({o.cells[n].nfe})",
                          f"{q.label}: {C.fmt_e(q.cells[n].err)} ({q.cells[n].nfe})",
                          C.fmt_f(q.cells[n].err / o.cells[n].err, 2)])
    md += [C.md_table(["problem", "NFE≈", "best scoresde (NFE)", "best peer (NFE)",
                       "peer / scoresde error"], brows, "lrllr"), ""]

    md += ["### Few steps: default scoresde against the best peer", "",
           f"Target (issue 12, item 2): at {' and '.join(str(n) for n in FEW_STEP_NFES)} NFE "
           f"the best scoresde solver *with its default options* has at most "
           f"{FEW_STEP_FACTOR:g} × the error of the best peer solver at the same NFE. The "
           "scoresde candidates are the rows above that pass no option other than `steps`, "
           "or only options equal to the registry's defaults ("
           + ", ".join(f"`{spec.solver}`" for spec in OURS_DET if uses_defaults(spec))
           + ") and that counted at most the target's NFE; the peers are every fixed-step "
           "peer row in the same column (the compared-with column of its table applies).",
           ""]
    frows = []
    for p, rows in summaries:
        for n in FEW_STEP_NFES:
            o, q = few_step_rows(rows, n)
            if o is None:
                ok, ratio, cell = False, math.inf, "none"
            else:
                ratio = o.cells[n].err / q.cells[n].err
                ok = ratio <= FEW_STEP_FACTOR
                cell = f"{o.label}: {C.fmt_e(o.cells[n].err)} ({o.cells[n].nfe})"
            frows.append([p.key, n, cell,
                          f"{q.label}: {C.fmt_e(q.cells[n].err)} ({q.cells[n].nfe})",
                          C.fmt_f(ratio, 3), C.verdict(ok)])
            targets.append((f"default scoresde ≤ {FEW_STEP_FACTOR:g} × best peer error at "
                            f"{n} NFE, {p.key}", ok,
                            f"ratio {ratio:.2f} ({o.label if o else 'none'} vs {q.label})"))
    md += [C.md_table(["problem", "NFE", "best default scoresde (NFE)", "best peer (NFE)",
                       "ratio", f"target ≤ {FEW_STEP_FACTOR:g}"], frows, "lrllrc"), ""]

    md += ["### Headline: DPM-Solver++(2M) against DDIM at 10 NFE", "",
           "Target: the 2M error at 10 NFE is at most half of DDIM's at 10 NFE.", ""]
    hrows = []
    for key, (c2, cd) in headline.items():
        ok = c2.err <= 0.5 * cd.err
        hrows.append([key, f"{C.fmt_e(c2.err, 2)} ({c2.nfe})", f"{C.fmt_e(cd.err, 2)} ({cd.nfe})",
                      C.fmt_f(c2.err / cd.err, 3), C.verdict(ok)])
        targets.append((f"DPM-Solver++(2M) ≤ 0.5 × DDIM at 10 NFE, {key}", ok,
                        f"ratio {c2.err / cd.err:.3f}"))
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
