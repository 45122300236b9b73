"""The ``scoresde`` command line end to end on tiny configs: train, sample with several
solvers (pictures, saved samples, the printed NFE), likelihood, resume == uninterrupted
training, the generated solver flags, and the one-line error policy (in process and as a
subprocess)."""
import math
import os
import re
import shutil
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from scoresde.cli import main  # noqa: E402
from scoresde.cli.demo import DEMO_CONFIG  # noqa: E402
from scoresde.cli.sample import solver_flags  # noqa: E402
from scoresde.samplers.api import SOLVERS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--steps", "30", "--n", "256", "--hidden", "32", "--depth", "2", "--batch-size", "64",
        "--dtype", "float64", "--no-progress"]
FAST_ODE = ["--rtol", "1e-3", "--atol", "1e-3", "--no-progress"]
NUMBER = r"(-?[0-9.]+(?:e[-+]?\d+)?|nan|inf)"


def run_cli(capsys, *argv):
    """main(argv) -> (status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def ok(capsys, *argv):
    status, out, err = run_cli(capsys, *argv)
    assert status == 0, err
    return out


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    """A 30-step float64 MLP run on 256 moons points."""
    out = tmp_path_factory.mktemp("runs") / "moons"
    assert main(["train", "--data", "moons", "--out", str(out)] + TINY) == 0
    return out


def parse_stats(text):
    """{"NLL": (mean, se), "bits/dim": (mean, se)} and the NFE from likelihood's output."""
    stats = {key: tuple(float(v) for v in re.search(
        rf"^{re.escape(key)}\s+{NUMBER} \+- {NUMBER}", text, re.M).groups())
        for key in ("NLL", "bits/dim")}
    return stats, int(re.search(r"^NFE\s+(\d+)", text, re.M).group(1))


# -- train ------------------------------------------------------------------------------------
def test_train_writes_a_run(moons_run, capsys):
    assert {"config.json", "model.safetensors", "ema.safetensors"} <= set(os.listdir(moons_run))
    other = moons_run.parent / "again"
    out = ok(capsys, "train", "--data", "moons", "--out", other, *TINY)
    assert re.search(r"trained 30 steps \(to step 30\) in [0-9.]+ s", out)
    loss = float(re.search(r"final loss " + NUMBER, out).group(1))
    assert math.isfinite(loss) and loss > 0


def test_resume_equals_uninterrupted_training(tmp_path, capsys):
    from safetensors.torch import load_file
    args = ["--data", "gmm", "--n", "200", "--hidden", "16", "--depth", "1", "--batch-size",
            "32", "--dtype", "float64", "--log-every", "4", "--seed", "3", "--no-progress"]
    ok(capsys, "train", "--out", tmp_path / "full", "--steps", "16", *args)
    ok(capsys, "train", "--out", tmp_path / "part", "--steps", "8", *args)
    out = ok(capsys, "train", "--out", tmp_path / "part", "--resume", "--steps", "16",
             "--no-progress")
    assert "resuming" in out and "trained 8 steps (to step 16)" in out
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        full, part = load_file(tmp_path / "full" / name), load_file(tmp_path / "part" / name)
        assert full.keys() == part.keys()
        assert all(torch.equal(full[k], part[k]) for k in full), name


# -- sample -----------------------------------------------------------------------------------
@pytest.mark.parametrize("solver, steps, nfe", [
    ("pc", 10, 10),               # 5 grid steps: a predictor and one corrector move each
    ("euler_maruyama", 7, 7),
    ("ode_heun", 8, 8),           # 4 Heun steps
])
def test_sample_fixed_step_solvers(moons_run, tmp_path, capsys, solver, steps, nfe):
    png, npy = tmp_path / "s.png", tmp_path / "s.npy"
    out = ok(capsys, "sample", "--run", moons_run, "--solver", solver, "--steps", steps,
             "--num", 50, "--out", png, "--save-samples", npy, "--no-progress")
    assert int(re.search(r"NFE (\d+)", out).group(1)) == nfe
    picture = matplotlib.image.imread(png)
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0]  # two panels side by side
    x = np.load(npy)
    assert x.shape == (50, 2) and x.dtype == np.float64 and np.isfinite(x).all()


def test_sample_adaptive_ode_and_pt_file(moons_run, tmp_path, capsys):
    out = ok(capsys, "sample", "--run", moons_run, "--solver", "ode", "--num", 20,
             "--out", tmp_path / "o.png", "--save-samples", tmp_path / "o.pt", *FAST_ODE)
    assert int(re.search(r"NFE (\d+)", out).group(1)) > 0
    x = torch.load(tmp_path / "o.pt")
    assert x.shape == (20, 2) and torch.isfinite(x).all()


def test_sample_is_seeded(moons_run, tmp_path, capsys):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        ok(capsys, "sample", "--run", moons_run, "--solver", "euler_maruyama", "--steps", 3,
           "--num", 5, "--seed", seed, "--out", tmp_path / "p.png",
           "--save-samples", tmp_path / f"{name}.npy", "--no-progress")
    a, b, c = (np.load(tmp_path / f"{n}.npy") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_default_picture_goes_into_the_run(moons_run, capsys):
    ok(capsys, "sample", "--run", moons_run, "--solver", "ddim", "--steps", 3, "--num", 10,
       "--no-progress")
    assert (moons_run / "samples_ddim.png").stat().st_size > 0


def test_solver_flags_are_generated_from_the_registry(capsys):
    options = {o for spec in SOLVERS.values() for o in spec.options}
    flags = solver_flags()
    assert set(flags) == options
    assert flags["corrector_steps"].flag == "--corrector-steps"
    assert flags["snr"].kind is float and flags["steps"].kind is int
    assert flags["denoise"].kind is bool and flags["method"].kind is str
    status, out, _ = run_cli(capsys, "sample", "--help")
    assert status == 0 and all(f.flag in out for f in flags.values())


@pytest.mark.parametrize("argv", [["sample", "--list-solvers"], ["sample", "--solver", "list"]])
def test_list_solvers(capsys, argv):
    out = ok(capsys, *argv)
    for name, spec in SOLVERS.items():
        assert re.search(rf"^{re.escape(name)}\s+{re.escape(spec.summary)}$", out, re.M)
    assert "--corrector-steps 1" in out


# -- likelihood -------------------------------------------------------------------------------
def test_likelihood_points(moons_run, capsys):
    out = ok(capsys, "likelihood", "--run", moons_run, "--n", 6, "--batch-size", 4, *FAST_ODE)
    stats, nfe = parse_stats(out)
    (nll, nll_se), (bpd, bpd_se) = stats["NLL"], stats["bits/dim"]
    assert nfe > 0 and all(math.isfinite(v) for v in (nll, nll_se, bpd, bpd_se))
    assert bpd == pytest.approx(nll / (2 * math.log(2)), abs=2e-4)  # D = 2
    assert "6 test points of moons" in out and "true entropy" not in out


def test_likelihood_gmm_prints_the_true_entropy(tmp_path, capsys):
    ok(capsys, "train", "--data", "gmm", "--out", tmp_path / "gmm", *TINY)
    out = ok(capsys, "likelihood", "--run", tmp_path / "gmm", "--split", "train", "--n", 5,
             "--trace", "hutchinson", "--n-probes", 2, *FAST_ODE)
    nll = parse_stats(out)[0]["NLL"][0]
    m = re.search(rf"true entropy on the same points\s+{NUMBER} \+- {NUMBER} nats; gap "
                  rf"{NUMBER} \+- {NUMBER}", out)
    entropy, _, gap, gap_se = (float(v) for v in m.groups())
    assert gap == pytest.approx(nll - entropy, abs=2e-4) and math.isfinite(gap_se)


def test_digits_unet_train_sample_likelihood(tmp_path, capsys):
    pytest.importorskip("sklearn")
    run = tmp_path / "digits"
    out = ok(capsys, "train", "--data", "digits", "--out", run, "--steps", 3, "--n", 32,
             "--batch-size", 8, "--hidden", 8, "--dtype", "float64", "--no-progress")
    assert "UNet" in out
    ok(capsys, "sample", "--run", run, "--solver", "ddim", "--steps", 3, "--num", 4,
       "--out", tmp_path / "d.png", "--save-samples", tmp_path / "d.npy", "--no-progress")
    assert np.load(tmp_path / "d.npy").shape == (4, 1, 8, 8)
    out = ok(capsys, "likelihood", "--run", run, "--n", 2, "--trace", "hutchinson",
             "--rtol", "1e-2", "--atol", "1e-2", "--no-progress")
    stats, nfe = parse_stats(out)
    assert nfe > 0 and all(math.isfinite(v) for pair in stats.values() for v in pair)
    # the bound in nats per image is bits/dim * D * ln 2 with D = 64
    assert stats["NLL"][0] == pytest.approx(stats["bits/dim"][0] * 64 * math.log(2), rel=1e-3)
    assert "not 8-bit" in out  # digits have 17 grey levels


def test_npy_file_data(tmp_path, capsys):
    """A user's .npy file: 3-D points; the test split is every 10th row of the file."""
    np.save(tmp_path / "pts.npy", np.random.default_rng(0).normal(size=(200, 3)))
    run = tmp_path / "run"
    ok(capsys, "train", "--data", tmp_path / "pts.npy", "--out", run, "--steps", 5,
       "--hidden", 8, "--depth", 1, "--dtype", "float64", "--no-progress")
    ok(capsys, "sample", "--run", run, "--solver", "ode_euler", "--steps", 3, "--num", 7,
       "--out", tmp_path / "p.png", "--save-samples", tmp_path / "p.npy", "--no-progress")
    assert np.load(tmp_path / "p.npy").shape == (7, 3)
    out = ok(capsys, "likelihood", "--run", run, *FAST_ODE)
    assert "20 test points of " in out
    stats, _ = parse_stats(out)
    assert stats["bits/dim"][0] == pytest.approx(stats["NLL"][0] / (3 * math.log(2)), abs=2e-4)


def test_demo_runs(tmp_path, capsys, monkeypatch):
    # the demo's own network and tolerances, shrunk through its one config dict
    monkeypatch.setitem(DEMO_CONFIG, "net", {"hidden": 16, "depth": 1})
    monkeypatch.setitem(DEMO_CONFIG, "solvers", (("ode", {"rtol": 1e-3, "atol": 1e-3}),
                                                 ("dpm_solver++", {"steps": 5})))
    monkeypatch.setitem(DEMO_CONFIG, "likelihood", {"rtol": 1e-3, "atol": 1e-3,
                                                    "trace": "exact"})
    out = ok(capsys, "demo", "--out", tmp_path, "--train-steps", 5, "--num", 20, "--test", 3)
    assert "trained 5 steps" in out and "dpm_solver++: NFE 5" in out
    assert "sampled 20 points with ode" in out and "true entropy" in out
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "checkpoint").is_dir()


# -- errors: status 2, one line on stderr, no traceback ------------------------------------------
def assert_one_line_error(status, err, command, *fragments):
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"scoresde {command}: error: "), lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def broken_run(moons_run, tmp_path):
    run = tmp_path / "broken"
    shutil.copytree(moons_run, run)
    blob = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    return run


@pytest.mark.parametrize("argv, fragments", [
    (["sample", "--run", "{tmp}/missing"], ["does not exist"]),
    (["sample", "--run", "{tmp}"], ["not a scoresde checkpoint directory"]),
    (["sample", "--run", "{broken}"], ["model.safetensors", "truncated"]),
    (["likelihood", "--run", "{broken}"], ["truncated"]),
    (["sample", "--run", "{run}", "--solver", "nope"], ["--solver", "'nope'"]),
    (["sample", "--run", "{run}", "--num", "0"], ["--num", "positive integer"]),
    (["sample", "--run", "{run}", "--solver", "ode", "--rtol", "-1"], ["rtol"]),
    (["sample", "--run", "{run}", "--solver", "ode", "--snr", "0.1"],
     ["--snr", "'ode'", "--rtol", "--max-steps"]),
    (["sample", "--run", "{run}", "--solver", "ddpm"], ["DiscreteVPSDE"]),
    (["sample", "--run", "{run}", "--steps", "x"], ["--steps", "integer"]),
    (["sample", "--run", "{run}", "--save-samples", "{tmp}/x.txt"], [".npy or .pt"]),
    (["sample"], ["--run"]),
    (["likelihood", "--run", "{run}", "--rtol", "-1e-5"], ["rtol"]),
    (["likelihood", "--run", "{run}", "--trace", "nope"], ["--trace"]),
    (["train", "--data", "nope", "--out", "{tmp}/r"], ["unknown data set 'nope'"]),
    (["train", "--data", "{tmp}/missing.npy", "--out", "{tmp}/r"], ["does not exist"]),
    (["train", "--data", "moons", "--out", "{run}"], ["--resume"]),
    (["train", "--out", "{run}", "--resume", "--lr", "1"], ["--lr", "--resume"]),
    (["train", "--out", "{tmp}/r", "--resume"], ["does not exist"]),
    (["train", "--data", "moons", "--loss", "ddpm", "--out", "{tmp}/r"], ["DiscreteVPSDE"]),
    (["train", "--data", "moons", "--ema-decay", "1.5", "--out", "{tmp}/r"], ["ema_decay"]),
    (["train", "--data", "moons", "--sde", "vp", "--sigma-max", "3", "--out", "{tmp}/r"],
     ["--sigma-max"]),
    (["train", "--data", "moons"], ["--out"]),
])
def test_user_errors_are_one_line(moons_run, broken_run, tmp_path, capsys, argv, fragments):
    argv = [a.format(tmp=tmp_path, run=moons_run, broken=broken_run) for a in argv]
    status, _, err = run_cli(capsys, *argv)
    assert_one_line_error(status, err, argv[0], *fragments)
    assert not (tmp_path / "r").exists()


def test_error_as_a_subprocess(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    env.pop("SCORESDE_TRACEBACK", None)
    proc = subprocess.run([sys.executable, "-m", "scoresde.cli", "sample", "--run",
                           str(tmp_path / "missing")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode != 0 and proc.stdout == ""
    assert_one_line_error(proc.returncode, proc.stderr, "sample", "does not exist")
