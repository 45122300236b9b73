"""Check that every sampler, the likelihood, training and checkpoints run on a GPU.

    python benchmarks/cuda_check.py [--device cuda]

CI has no GPU, so the test suite runs on CPU only; this script is the check of the CUDA
paths (device and dtype must follow the inputs). It samples a 2-D mixture with its exact
score on every solver and SDE that supports it, computes exact-trace likelihoods against
the closed form, trains a small MLP for 200 steps on the device, saves and reloads the
checkpoint onto the device and samples the trained model. It prints one line per check and
exits 1 if any check fails (a solver refusing an SDE it does not support is not a failure).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import scoresde as sd  # noqa: E402
from scoresde.samplers.api import SOLVERS  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {dev} ({name}), torch {torch.__version__}")
    fails = []
    oracle = sd.data.gmm_oracle()
    cov_true = oracle.covariance
    for sde in (sd.VPSDE(), sd.VESDE(sigma_max=5.0), sd.DiscreteVPSDE.linear(1000)):
        score = oracle.with_sde(sde).score
        for solver, spec in SOLVERS.items():
            # steps counts network evaluations: 24 fits every sampler's rule (heun_karras: 23)
            steps = 23 if solver == "heun_karras" else 24
            opts = {"steps": steps} if "steps" in spec.options and solver != "ddpm" else {}
            label = f"{type(sde).__name__:14s} {solver:18s}"
            g = torch.Generator(device=dev).manual_seed(0)
            try:
                t0 = time.perf_counter()
                res = sd.sample(score, sde, (2048, 2), solver=solver, generator=g, device=dev,
                                dtype=torch.float32, **opts)
                seconds = time.perf_counter() - t0
            except TypeError as err:  # the solver does not support this SDE: say so
                print(f"{label} not applicable: {err}")
                continue
            on_device = res.x.device.type == dev.type and res.x.dtype == torch.float32
            finite = bool(torch.isfinite(res.x).all())
            cov = torch.cov(res.x.double().T).cpu()
            cov_err = float((cov - cov_true).abs().max())
            ok = on_device and finite and cov_err < 0.3
            print(f"{label} NFE {res.nfe:5d}  {seconds:6.2f} s  max |cov - true| {cov_err:.3f}"
                  f"  {'ok' if ok else 'FAIL'}")
            if not ok:
                fails.append(label)

    sde = sd.VPSDE()
    x = oracle.sample(512, generator=torch.Generator().manual_seed(1)).to(dev)
    ll = sd.log_likelihood(oracle.with_sde(sde).score, sde, x, rtol=1e-6, atol=1e-6,
                           trace="exact")
    err = float((ll.logp.cpu() - oracle.log_prob(x.cpu())).abs().mean() / 2)
    ok = ll.logp.device.type == dev.type and err < 1e-3
    print(f"log_likelihood float64 on {ll.logp.device}: NFE {ll.nfe}, mean |error| per dim "
          f"{err:.2e} (prior N(0, I) in place of p_T)  {'ok' if ok else 'FAIL'}")
    if not ok:
        fails.append("log_likelihood")

    net = sd.MLP(2, hidden=64, depth=2).to(dev)
    train = sd.load_dataset("gmm", split="train", n=4096)
    trainer = sd.Trainer(net, sde, train, sd.TrainConfig(steps=200, batch_size=512, lr=2e-3,
                                                          log_every=50))
    t0 = time.perf_counter()
    trainer.train(progress=False)
    print(f"Trainer on {dev}: 200 steps in {time.perf_counter() - t0:.2f} s, last loss "
          f"{trainer.history[-1]['loss']:.4f}")
    with tempfile.TemporaryDirectory() as d:
        trainer.save(d)
        resumed = sd.Trainer.load(d, device=dev)
        same = all(torch.equal(a, b) for a, b in zip(resumed.net.state_dict().values(),
                                                     trainer.net.state_dict().values()))
        resumed.train(steps=10, progress=False)
        print(f"checkpoint round trip: weights equal {same}, resumed on "
              f"{next(resumed.net.parameters()).device}  {'ok' if same else 'FAIL'}")
        if not same:
            fails.append("checkpoint")
    res = sd.sample(trainer.ema, sde, (256, 2), solver="dpm_solver++", steps=10, device=dev,
                    dtype=torch.float32)
    print(f"trained model sampled on {res.x.device}, NFE {res.nfe}")
    print(f"{len(fails)} failure(s)" + (": " + ", ".join(fails) if fails else ""))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
