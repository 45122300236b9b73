"""The cases of tests/scoresde/test_distributed.py, run the same way in one process and by
every rank of ``torchrun --nproc_per_node=2 tests/scoresde/distributed_worker.py OUT
SCENARIO`` (gloo on CPU). Each rank saves its results to OUT/rank{r}.pt; the test
compares them with the one-process results of the same functions.

Scenarios: ``checks`` (every sampling, likelihood and training case, then a call in which
rank 1's score raises: both ranks must exit with that error), ``die`` (rank 1 exits hard
before the collective: the launcher must end the run).
"""
from __future__ import annotations

import os
import sys
from typing import Dict

import torch

import scoresde as sd

F64 = torch.float64
N = 10                  # samples in every sampling case
BATCHES = (3, 8)        # batch_size of the cases (chunks the ranks' runs are made of)
TRAIN_STEPS = 20

SDE = sd.VPSDE()
DATA = sd.GaussianData(torch.tensor([1.0, -0.5], dtype=F64), torch.eye(2, dtype=F64) * 0.3,
                       sde=SDE)
MIXTURE = sd.GaussianMixture(
    torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([[2.0, 0.0], [-1.0, 1.0]], dtype=F64),
    torch.stack([torch.eye(2, dtype=F64) * 0.2] * 2), sde=SDE, labels=[0, 1])

# name -> (solver, options): fixed-step and adaptive, ODE and SDE, pc with its batch norm
SAMPLE_CASES = {
    "euler_maruyama": ("euler_maruyama", {"steps": 10}),
    "pc": ("pc", {"steps": 8}),
    "heun_karras_churn": ("heun_karras", {"steps": 9, "s_churn": 5.0}),
    "ode_dopri5": ("ode", {"rtol": 1e-4, "atol": 1e-4}),
    "sde_adaptive_milstein": ("sde_adaptive", {"method": "milstein", "rtol": 0.1,
                                               "atol": 0.1}),
}


def sample_case(name: str, batch_size: int, distributed: bool) -> torch.Tensor:
    solver, options = SAMPLE_CASES[name]
    if distributed:
        return sd.distributed.sample(DATA.score, SDE, (2,), n_total=N, seed=7, solver=solver,
                                     batch_size=batch_size, dtype=F64, **options).x
    return sd.sample(DATA.score, SDE, (N, 2), solver, seed=7, batch_size=batch_size,
                     dtype=F64, **options).x


def guided_case(batch_size: int, distributed: bool) -> torch.Tensor:
    """Classifier-free guidance with per-sample labels: each rank takes its rows of cond."""
    cond = torch.arange(N) % 2
    kw = dict(cond=cond, guidance=1.5, dtype=F64, steps=10, batch_size=batch_size, seed=3)
    if distributed:
        return sd.distributed.sample(MIXTURE.score, SDE, (2,), n_total=N, solver="ode_heun",
                                     **kw).x
    return sd.sample(MIXTURE.score, SDE, (N, 2), "ode_heun", **kw).x


def likelihood_case(trace: str, batch_size: int, distributed: bool) -> torch.Tensor:
    x = DATA.sample(N, generator=torch.Generator().manual_seed(1), dtype=F64)
    kw = dict(trace=trace, rtol=1e-4, atol=1e-4, batch_size=batch_size)
    if trace == "hutchinson":
        kw.update(probe="gaussian", n_probes=2, seed=4)
    fn = sd.distributed.log_likelihood if distributed else sd.log_likelihood
    res = fn(DATA.score, SDE, x, **kw)
    return res.logp if trace == "exact" else res.logp_per_probe


def trainer() -> sd.Trainer:
    """A tiny float64 MLP on 64 two-moons points; the global batch is 8."""
    default = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.set_default_dtype(F64)  # the same initial weights whatever the caller's default
        try:
            net = sd.MLP(dim=2, hidden=16, depth=1)
        finally:
            torch.set_default_dtype(default)
    data = sd.load_dataset("moons", n=64, dtype=F64)
    config = sd.TrainConfig(steps=TRAIN_STEPS, batch_size=8, lr=1e-2, warmup=2, log_every=5,
                            seed=0)
    return sd.Trainer(net, SDE, data, config)


def weights(t: sd.Trainer) -> Dict[str, torch.Tensor]:
    return {**{"net." + k: v.detach().clone() for k, v in t.net.state_dict().items()},
            **{"ema." + k: v.detach().clone() for k, v in t.ema_net.state_dict().items()}}


def checks(out: str) -> Dict[str, object]:
    results: Dict[str, object] = {}
    for name in SAMPLE_CASES:
        for b in BATCHES:
            results[f"sample/{name}/b{b}"] = sample_case(name, b, True)
    for b in BATCHES:
        results[f"guided/b{b}"] = guided_case(b, True)
        for trace in ("exact", "hutchinson"):
            results[f"likelihood/{trace}/b{b}"] = likelihood_case(trace, b, True)
    res = sd.distributed.sample(DATA.score, SDE, (2,), n_total=N, seed=7, steps=4,
                                solver="euler_maruyama", dtype=F64)
    results["nfe_per_rank"], results["nfe"] = res.stats["nfe_per_rank"], res.nfe
    # DDP: 10 steps, a checkpoint (rank 0 writes), 10 more
    t = trainer()
    t.train(TRAIN_STEPS // 2, progress=False, directory=os.path.join(out, "half"))
    t.train(progress=False)
    results["train/weights"], results["train/history"] = weights(t), t.history
    return results


def failing_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if sd.distributed.rank() == 1:
        raise ValueError("rank 1 broke: bad input on purpose")
    return DATA.score(x, t)


def main(out: str, scenario: str) -> None:
    sd.distributed.init(timeout_s=60)
    r = sd.distributed.rank()
    if scenario == "checks":
        torch.save(checks(out), os.path.join(out, f"rank{r}.pt"))
        sd.distributed.sample(failing_score, SDE, (2,), n_total=N, seed=0, steps=3,
                              solver="euler_maruyama", dtype=F64)
    elif scenario == "die":
        if r == 1:
            os._exit(3)
        sd.distributed.sample(DATA.score, SDE, (2,), n_total=N, seed=0, steps=3,
                              solver="euler_maruyama", dtype=F64)
    print(f"rank {r}: finished", flush=True)  # never reached in either scenario


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
