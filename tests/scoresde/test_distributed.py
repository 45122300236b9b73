"""scoresde.distributed under torchrun (2 CPU processes, gloo) equals one process: sampling
and likelihoods bitwise for world sizes 1 and 2 and batch sizes 3 and 8, DDP training to
1e-10 in float64 over 20 steps, resuming under another world size; a rank that raises or
dies ends the whole run (issue 15). The cases are in distributed_worker.py; each torchrun
launch (a few seconds) is shared by the tests of this module."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scoresde as sd
from scoresde.cli import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("distributed_worker",
                                               HERE / "distributed_worker.py")
w = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(w)

LAUNCH_TIMEOUT = 300  # seconds: a hang fails the test instead of the test run


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One torchrun launch of every case (2 ranks); then a call in which rank 1 raises."""
    out = tmp_path_factory.mktemp("distributed")
    proc = torchrun(str(HERE / "distributed_worker.py"), str(out), "checks")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)
             if (out / f"rank{r}.pt").exists()]
    assert len(ranks) == 2, proc.stdout + proc.stderr
    return out, ranks, proc


def _reference(key: str):
    kind, *rest = key.split("/")
    b = int(rest[-1][1:])
    if kind == "sample":
        return lambda dist: w.sample_case(rest[0], b, dist)
    if kind == "guided":
        return lambda dist: w.guided_case(b, dist)
    return lambda dist: w.likelihood_case(rest[0], b, dist)


KEYS = ([f"sample/{n}/b{b}" for n in w.SAMPLE_CASES for b in w.BATCHES]
        + [f"guided/b{b}" for b in w.BATCHES]
        + [f"likelihood/{tr}/b{b}" for tr in ("exact", "hutchinson") for b in w.BATCHES])


@pytest.mark.parametrize("key", KEYS)
def test_two_processes_equal_one_bitwise(launched, key):
    _, ranks, _ = launched
    one = _reference(key)(False)                # sd.sample / sd.log_likelihood, one process
    assert torch.equal(ranks[0][key], one) and torch.equal(ranks[1][key], one)
    assert torch.equal(_reference(key)(True), one)   # world size 1: no process group


def test_batch_size_does_not_matter_for_fixed_step_solvers(launched):
    _, ranks, _ = launched
    for name in ("euler_maruyama", "heun_karras_churn"):
        assert torch.equal(ranks[0][f"sample/{name}/b3"], ranks[0][f"sample/{name}/b8"])


def test_nfe_per_rank_and_summed(launched):
    _, ranks, _ = launched
    assert ranks[0]["nfe_per_rank"] == [4, 4] and ranks[0]["nfe"] == 8


def test_ddp_training_equals_one_process(launched):
    """20 AdamW steps, global batch 8 split 4 + 4: the weights and EMA of one process to
    1e-10 (measured 2e-16; only the order of the gradient sums differs)."""
    out, ranks, _ = launched
    t = w.trainer()
    t.train(progress=False)
    one = w.weights(t)
    two = ranks[0]["train/weights"]
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-10
    assert all(torch.equal(two[k], ranks[1]["train/weights"][k]) for k in two)
    got = [h["loss"] for h in ranks[0]["train/history"]]
    assert got == pytest.approx([h["loss"] for h in t.history], rel=1e-12, abs=0)
    # rank 0's checkpoint at step 10, resumed by one process: the same run
    resumed = sd.Trainer.load(str(out / "half"))
    assert resumed.step == 10
    resumed.train(progress=False)
    again = w.weights(resumed)
    assert max(float((one[k] - again[k]).abs().max()) for k in one) < 1e-10


def test_a_rank_that_raises_fails_the_run(launched):
    """Rank 1's score raises: rank 1 exits with its ValueError, rank 0 with a RankError
    naming it (neither waits for the other), and the launch fails."""
    _, _, proc = launched
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ValueError: rank 1 broke: bad input on purpose" in text
    assert "RankError: rank 1 of 2 failed: ValueError: rank 1 broke" in text
    assert "finished" not in proc.stdout


def test_a_rank_that_dies_ends_the_run(tmp_path):
    proc = torchrun(str(HERE / "distributed_worker.py"), str(tmp_path), "die")
    assert proc.returncode != 0 and "finished" not in proc.stdout


def test_shards():
    assert sd.distributed.shards(10, 2) == [(0, 5), (5, 10)]
    assert sd.distributed.shards(10, 2, 3) == [(0, 6), (6, 10)]      # chunks 0-1 | 2-3
    assert sd.distributed.shards(10, 3, 8) == [(0, 0), (0, 8), (8, 10)]
    assert sd.distributed.shards(7, 4) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    for n, world, b in ((10, 2, None), (10, 3, 3), (5, 8, None), (100, 7, 9)):
        runs = sd.distributed.shards(n, world, b)
        assert runs[0][0] == 0 and runs[-1][1] == n
        assert all(a[1] == c[0] for a, c in zip(runs, runs[1:]))


def test_no_generator():
    with pytest.raises(ValueError, match="seed="):
        sd.distributed.sample(w.DATA.score, w.SDE, (2,), n_total=4, seed=0, steps=2,
                              solver="euler_maruyama", generator=torch.Generator())


def test_cli_sample_under_torchrun_writes_the_same_file(tmp_path, capsys):
    run = tmp_path / "moons"
    tiny = ["--steps", "5", "--n", "64", "--hidden", "16", "--depth", "1", "--batch-size",
            "16", "--dtype", "float64", "--no-progress"]
    assert main(["train", "--data", "moons", "--out", str(run)] + tiny) == 0
    # batches of 5: the network sees the same batches in one process and in two
    common = ["sample", "--run", str(run), "--num", "10", "--seed", "0", "--solver",
              "euler_maruyama", "--steps", "10", "--batch-size", "5", "--no-progress"]
    assert main(common + ["--save-samples", str(tmp_path / "one.pt"),
                          "--out", str(tmp_path / "one.png")]) == 0
    # "--": torchrun's parser would take --run and --num for prefixes of its own flags
    proc = torchrun("-m", "scoresde.cli", "--", *common, "--save-samples", str(tmp_path / "two.pt"),
                    "--out", str(tmp_path / "two.png"))
    assert proc.returncode == 0, proc.stderr
    assert "NFE per process [10, 10], samples per process [5, 5]" in proc.stdout
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one.shape == (10, 2) and torch.equal(one, two)


@pytest.mark.parametrize("loss", ["dsm", "ddpm"])
def test_loss_rows_are_the_rows_of_the_whole_batch(loss):
    """A rank's rows= of a loss: the one-process batch's draws, its rows' losses."""
    sde = sd.DiscreteVPSDE.linear(N=50) if loss == "ddpm" else w.SDE
    fn = sd.ddpm_loss if loss == "ddpm" else sd.dsm_loss
    x0 = w.DATA.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    score = w.DATA.score if loss == "dsm" else sd.GaussianData(
        torch.tensor([1.0, -0.5], dtype=torch.float64), torch.eye(2, dtype=torch.float64) * 0.3,
        sde=sde).score
    whole = fn(score, sde, x0, generator=torch.Generator().manual_seed(1), reduce="none")
    part = fn(score, sde, x0, generator=torch.Generator().manual_seed(1), reduce="none",
              rows=(3, 7))
    assert part.shape == (4,) and torch.equal(part, whole[3:7])


def test_cli_train_under_torchrun_equals_one_process(tmp_path):
    """scoresde train with 2 DDP processes: the one-process run's weights to 1e-10 (float64),
    its checkpoint written once by rank 0, and resumable by one process."""
    tiny = ["--data", "moons", "--steps", "10", "--n", "64", "--hidden", "16", "--depth", "1",
            "--batch-size", "16", "--dtype", "float64", "--no-progress"]
    # the command's network is initialised in torch's default dtype (then cast): float32
    # in the torchrun processes, so here too (conftest makes the tests' default float64)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        assert main(["train", "--out", str(tmp_path / "one")] + tiny) == 0
    finally:
        torch.set_default_dtype(default)
    proc = torchrun("-m", "scoresde.cli", "--", "train", "--out", str(tmp_path / "two"), *tiny)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("trained 10 steps") == 1          # rank 0 prints

    def weights(run):
        ck = sd.load_checkpoint(str(tmp_path / run), use_ema=False)
        return {k: v for k, v in ck.model.net.state_dict().items()}

    for _ in range(2):
        one, two = weights("one"), weights("two")
        assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-10
        for run in ("one", "two"):  # resumed by one process, 5 more steps
            assert main(["train", "--out", str(tmp_path / run), "--resume", "--steps", "15",
                         "--no-progress"]) == 0
