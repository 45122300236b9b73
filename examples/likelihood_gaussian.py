"""Exact log-likelihoods of Gaussian data through the probability-flow ODE, against the closed form.

    python examples/likelihood_gaussian.py [--dim 5] [--num 8] [--tol 1e-5]

Data x ~ N(mu, Sigma) with a random anisotropic covariance; the score is the closed-form
oracle, so the only errors are the ODE solve, the trace estimate, and the prior standing in
for the true marginal p_T at t = T. For each SDE and trace type the table gives the mean over
the batch of our log p_eps(x), the closed form log N(x; alpha mu, alpha^2 Sigma + std^2 I),
the error per dimension of logp itself (which includes the prior mismatch), the error with
the exact log p_T(z) in place of the prior (the ODE/trace error alone), and the NFE.
"""
from __future__ import annotations

import argparse
import time

import torch

import scoresde as sd
from scoresde.likelihood import log_likelihood


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=5)
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--tol", type=float, default=1e-5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # thousands of tiny tensor ops: one thread is fastest
    dtype = torch.float64

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(args.dim, args.dim, generator=g, dtype=dtype))
    cov = (q * (0.05 + 1.95 * torch.rand(args.dim, generator=g, dtype=dtype))) @ q.T
    cov = 0.5 * (cov + cov.T)
    mu = torch.randn(args.dim, generator=g, dtype=dtype)

    sdes = {"VPSDE": sd.VPSDE(), "SubVPSDE": sd.SubVPSDE(), "VESDE": sd.VESDE(),
            "CosineVPSDE": sd.CosineVPSDE(), "DiscreteVPSDE": sd.DiscreteVPSDE.linear(1000)}
    traces = [("exact", {}), ("hutchinson x1", dict(trace="hutchinson", n_probes=1)),
              ("hutchinson x64", dict(trace="hutchinson", n_probes=64))]
    eps = 1e-5
    print(f"D = {args.dim}, batch = {args.num}, dopri5, rtol = atol = {args.tol:g}, eps = {eps:g}")
    print(f"{'SDE':14s} {'trace':15s} {'logp':>10s} {'closed form':>12s} {'err/D':>9s} "
          f"{'ODE err/D':>9s} {'stderr':>8s} {'NFE':>5s}")
    start = time.time()
    for name, sde in sdes.items():
        oracle = sd.GaussianData(mu, cov, sde=sde)
        x = oracle.sample(args.num, generator=g, dtype=dtype)
        truth = oracle.log_prob(x, eps)
        for label, kw in traces:
            res = log_likelihood(oracle.score, sde, x, rtol=args.tol, atol=args.tol, eps=eps,
                                 generator=torch.Generator().manual_seed(1), **kw)
            ode_only = res.logp - res.prior_logp + oracle.log_prob(res.z, sde.T)
            err = (res.logp - truth).abs().mean().item() / args.dim
            ode_err = (ode_only - truth).abs().mean().item() / args.dim
            stderr = "" if res.stderr is None or res.stderr.isnan().all() else \
                f"{res.stderr.mean().item():8.4f}"
            print(f"{name:14s} {label:15s} {res.logp.mean().item():10.4f} "
                  f"{truth.mean().item():12.4f} {err:9.2e} {ode_err:9.2e} {stderr:>8s} "
                  f"{res.nfe:5d}")
    print(f"({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
