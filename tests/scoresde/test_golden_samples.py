"""Every sampler's output, bit for bit, against samples recorded before the sampler-core
redesign (issue 11): the same seed and the same NFE must give the same bits.

The reference file ``data/golden_samples.npz`` holds, per case, the samples and the NFE.
It was written by ``python tests/scoresde/test_golden_samples.py --write`` before the
redesign; rewrite it only for a change that is meant to alter samples, and say so in the
commit.

Bitwise on the machine that recorded them, equal to ``ATOL`` elsewhere: torch's vectorised
exp/log/sqrt kernels differ in the last unit between CPU families (the file was written on
an Intel Xeon; on an AMD EPYC 23 of the 42 cases differ, by 2.2e-16 to 1.3e-13, the
stochastic and many-step cases amplifying one-ulp differences over their steps). Any change
to a sampler's arithmetic beyond rounding moves the samples by orders of magnitude more. When the meaning of an option changes, change the case's options so that it makes the
same network evaluations; the recorded numbers stay. (The redesign made ``steps`` count
network evaluations for every fixed-step sampler: the pc, ode_heun, ode_rk4, singlestep
dpm_solver and heun_karras cases were recorded with grid steps and now pass the same
runs' evaluation counts. The dpm_solver++ cases were recorded on its old default grid,
logsnr, and pass it explicitly since the default became quadratic, issue 12; the unipc
cases were added then, the others' recorded bits unchanged. The singlestep dpm_solver cases
pass method="singlestep" since the default became multistep.)
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.nets import MLP

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "data", "golden_samples.npz")
SHAPE = (6, 2)
ATOL = 1e-12   # samples are O(1); cross-CPU rounding measured up to 1.3e-13 (docstring)

SDES = {
    "vp": lambda: sd.VPSDE(beta_min=0.1, beta_max=20.0),
    "ve": lambda: sd.VESDE(sigma_min=0.01, sigma_max=10.0),
    "subvp": lambda: sd.SubVPSDE(beta_min=0.1, beta_max=20.0),
    "ddpm20": lambda: sd.DiscreteVPSDE.linear(N=20, beta_start=1e-3, beta_end=0.2),
}

# id -> (sde, score, solver, options); score "gmm" is a 3-component closed-form mixture,
# "mlp" a fixed random eps-network (a ScoreModel; integer timesteps on DiscreteVPSDE).
CASES = {
    "euler_maruyama": ("vp", "gmm", "euler_maruyama", {"steps": 8}),
    "reverse_diffusion": ("vp", "gmm", "reverse_diffusion", {"steps": 8}),
    "ancestral": ("vp", "gmm", "ancestral", {"steps": 8}),
    "pc": ("vp", "gmm", "pc", {"steps": 12}),
    "pc_ancestral_ald": ("vp", "gmm", "pc", {"steps": 15, "predictor": "ancestral",
                                             "corrector": "ald", "corrector_steps": 2}),
    "pc_corrector_only": ("vp", "gmm", "pc", {"steps": 4, "predictor": "none"}),
    "pc_predictor_only": ("vp", "gmm", "pc", {"steps": 4, "corrector": "none"}),
    "ode_euler": ("vp", "gmm", "ode_euler", {"steps": 8}),
    "ode_heun": ("vp", "gmm", "ode_heun", {"steps": 16}),
    "ode_heun_denoise": ("vp", "gmm", "ode_heun", {"steps": 10, "denoise": True}),
    "ode_rk4_quadratic": ("vp", "gmm", "ode_rk4", {"steps": 16, "grid": "quadratic"}),
    "ode_dopri5": ("vp", "gmm", "ode", {"rtol": 1e-4, "atol": 1e-4}),
    "ode_RK45": ("vp", "gmm", "ode", {"method": "RK45", "rtol": 1e-4, "atol": 1e-4}),
    "sde_adaptive": ("vp", "gmm", "sde_adaptive", {"rtol": 1e-2, "atol": 1e-2, "dt": 0.05}),
    "ddpm_full": ("ddpm20", "gmm", "ddpm", {}),
    "ddpm_subset": ("ddpm20", "gmm", "ddpm", {"steps": 5}),
    "ddim_vp": ("vp", "gmm", "ddim", {"steps": 8}),
    "ddim_vp_eta1": ("vp", "gmm", "ddim", {"steps": 8, "eta": 1.0}),
    "ddim_discrete": ("ddpm20", "gmm", "ddim", {"steps": 5}),
    "dpm_solver_1": ("vp", "gmm", "dpm_solver", {"steps": 8, "order": 1,
                                                  "method": "singlestep"}),
    "dpm_solver_2s": ("vp", "gmm", "dpm_solver", {"steps": 8, "order": 2,
                                                   "method": "singlestep"}),
    "dpm_solver_3s": ("vp", "gmm", "dpm_solver", {"steps": 9, "order": 3,
                                                   "method": "singlestep"}),
    "dpm_solver_2m": ("vp", "gmm", "dpm_solver", {"steps": 8, "order": 2,
                                                  "method": "multistep"}),
    "dpm_solver_3m": ("vp", "gmm", "dpm_solver", {"steps": 8, "order": 3,
                                                  "method": "multistep"}),
    "dpm_solver++_1": ("vp", "gmm", "dpm_solver++", {"steps": 8, "order": 1,
                                                      "grid": "logsnr"}),
    "dpm_solver++_2m": ("vp", "gmm", "dpm_solver++", {"steps": 8, "grid": "logsnr"}),
    "dpm_solver++_3m": ("vp", "gmm", "dpm_solver++", {"steps": 8, "order": 3,
                                                       "grid": "logsnr"}),
    "unipc": ("vp", "gmm", "unipc", {"steps": 8}),
    "unipc_3": ("vp", "gmm", "unipc", {"steps": 8, "order": 3, "grid": "logsnr"}),
    "heun_karras": ("vp", "gmm", "heun_karras", {"steps": 9}),
    "heun_karras_churn": ("vp", "gmm", "heun_karras", {"steps": 9, "s_churn": 1.0}),
    "ve_euler_maruyama": ("ve", "gmm", "euler_maruyama", {"steps": 8}),
    "ve_pc": ("ve", "gmm", "pc", {"steps": 10}),
    "ve_ode_heun": ("ve", "gmm", "ode_heun", {"steps": 12}),
    "ve_heun_karras": ("ve", "gmm", "heun_karras", {"steps": 9}),
    "subvp_ode_rk4": ("subvp", "gmm", "ode_rk4", {"steps": 16}),
    "subvp_euler_maruyama": ("subvp", "gmm", "euler_maruyama", {"steps": 8}),
    "mlp_ddpm": ("ddpm20", "mlp", "ddpm", {}),
    "mlp_ddim": ("ddpm20", "mlp", "ddim", {"steps": 5}),
    "mlp_dpm_solver++": ("vp", "mlp", "dpm_solver++", {"steps": 6, "grid": "logsnr"}),
    "mlp_pc": ("vp", "mlp", "pc", {"steps": 8}),
}


def _score(kind: str, sde):
    if kind == "gmm":
        return sd.GaussianMixture(
            weights=torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
            means=torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.5]], dtype=torch.float64),
            covs=torch.stack([torch.eye(2, dtype=torch.float64) * v for v in (0.1, 0.2, 0.05)]),
            sde=sde).score
    net = MLP(dim=2, hidden=16, depth=2).double()
    gen = torch.Generator().manual_seed(1234)   # weights independent of the default dtype
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return sd.ScoreModel(net, sde, prediction="epsilon")


def run_case(case_id: str):
    sde_key, score_kind, solver, options = CASES[case_id]
    sde = SDES[sde_key]()
    g = torch.Generator().manual_seed(0)
    res = sd.sample(_score(score_kind, sde), sde, SHAPE, solver=solver, generator=g,
                    dtype=torch.float64, **options)
    return res.x.detach().numpy(), res.nfe


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("case_id", list(CASES))
def test_samples_are_the_recorded_ones(case_id, golden):
    x, nfe = run_case(case_id)
    assert nfe == int(golden[f"{case_id}/nfe"]), "a different number of network evaluations"
    want = golden[f"{case_id}/x"]
    assert np.abs(x - want).max() <= ATOL, f"max |diff| {np.abs(x - want).max():.3e}"


def test_every_solver_has_a_case(golden):
    from scoresde.samplers import SOLVERS
    from solvers import FIXED_ODE_METHODS
    new = {f"ode_{m}" for m in FIXED_ODE_METHODS} - {"ode_euler", "ode_heun", "ode_rk4"}
    assert set(SOLVERS) - new <= {c[2] for c in CASES.values()}
    assert {k.rsplit("/", 1)[0] for k in golden} == set(CASES)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/scoresde/test_golden_samples.py --write")
    out = {}
    for cid in CASES:
        x, nfe = run_case(cid)
        out[f"{cid}/x"], out[f"{cid}/nfe"] = x, np.array(nfe)
        print(f"{cid:24s} nfe {nfe:4d}  x[0] {x[0]}")
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    np.savez(GOLDEN, **out)
    print(f"wrote {GOLDEN}")
