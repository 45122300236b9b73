"""Crash safety of checkpoints and of ``scoresde train --save-every``.

1. Every kill point of a save, in process: the directory is copied after every syscall that
   changes it (mkstemp, os.fsync, os.replace, os.unlink) during a save and during the
   roll-forward of a killed save; each copy is exactly what a SIGKILL at that instant leaves
   (a killed process loses nothing already handed to the kernel). Each copy must load as the
   previous or the new checkpoint, bit for bit, and a later save from it must succeed.
2. The real command line, killed: ``scoresde train`` runs in a subprocess whose driver sends
   SIGKILL to its own process mid-step or right after a chosen ``os.replace`` of a save;
   after each kill the checkpoint on disk loads, holds the expected step and equals the
   uninterrupted run's checkpoint of that step; ``--resume`` (killed again, resumed again)
   finally gives weights, EMA and optimizer state equal (torch.equal) to the uninterrupted run.
3. ``scoresde sample`` on each corrupted run of test_checkpoint.CORRUPTIONS: status 2, one
   line naming the file.
4. The package source never unpickles: no torch.load without weights_only=True, no pickle.
"""
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

import scoresde as sd
from scoresde.checkpoint import (CheckpointError, has_checkpoint, load_checkpoint,
                                 save_checkpoint)
from scoresde.cli import main
from scoresde.data import load_dataset
from scoresde.nets import MLP
from scoresde.training import TrainConfig, Trainer

try:
    from .test_checkpoint import CORRUPTIONS, corrupt, forbid_unpickling
except ImportError:  # collected as a top-level module
    from test_checkpoint import CORRUPTIONS, corrupt, forbid_unpickling

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILES = ["config.json", "ema.safetensors", "model.safetensors", "optimizer.safetensors",
         "state.safetensors"]


def states(directory):
    """Everything a resume depends on, as {key: tensor}, plus the step."""
    ck = load_checkpoint(directory)
    out = {f"model.{k}": v for k, v in ck.net.state_dict().items()}
    out.update({f"ema.{k}": v for k, v in ck.ema_net.state_dict().items()})
    for pid, entries in ck.optimizer_state["state"].items():
        out.update({f"optimizer.{pid}.{k}": v for k, v in entries.items()
                    if isinstance(v, torch.Tensor)})
    out["generator"] = ck.generator_state
    return ck.step, out


def assert_same(a, b):
    (step_a, a), (step_b, b) = a, b
    assert step_a == step_b and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def contents(directory):
    return {n: (directory / n).read_bytes() for n in sorted(os.listdir(directory))}


# -- 1. every kill point of a save, in process --------------------------------------------------
class DiskSnapshots:
    """Copy ``directory`` to ``into/NN`` after every mkstemp, os.fsync, os.replace and
    os.unlink: the states a SIGKILL between two syscalls can leave. With ``until``, stop
    after the first snapshot whose label starts with it."""

    def __init__(self, monkeypatch, directory, into, until=None):
        self.directory, self.into, self.labels, self.until = directory, into, [], until
        self._busy = False
        self.snapshot("start")
        monkeypatch.setattr(tempfile, "mkstemp", self._wrap("mkstemp", tempfile.mkstemp))
        for name in ("fsync", "replace", "unlink"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def snapshot(self, label):
        shutil.copytree(self.directory, self.into / f"{len(self.labels):02d}")
        self.labels.append(label)

    def _wrap(self, name, original):
        def call(*args, **kwargs):
            result = original(*args, **kwargs)
            if not self._busy and not (self.until and self.labels[-1].startswith(self.until)):
                self._busy = True
                try:
                    if name == "fsync":
                        target = os.readlink(f"/proc/self/fd/{args[0]}")
                        what = "dir" if target == str(self.directory) else \
                            os.path.basename(target)
                    elif name == "mkstemp":
                        what = os.path.basename(result[1])
                    else:
                        what = os.path.basename(args[-1])
                    self.snapshot(f"{name} {re.sub(r'[.][^.]+[.]tmp$', '.*.tmp', what)}")
                finally:
                    self._busy = False
            return result
        return call

    @property
    def paths(self):
        return [self.into / f"{i:02d}" for i in range(len(self.labels))]


def snapshot_save(monkeypatch, trainer, directory, into, until=None):
    """trainer.save(directory), snapshotting the directory after every syscall."""
    with monkeypatch.context() as m:
        snaps = DiskSnapshots(m, directory, into, until)
        trainer.save(directory)
    return snaps


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fds through /proc")
def test_every_kill_point_of_a_save_loads_the_old_or_the_new_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    tr = Trainer(MLP(2, hidden=8, depth=1), sd.VPSDE(), load_dataset("gmm", n=64),
                 TrainConfig(steps=3, batch_size=8))
    run = tmp_path / "run"
    tr.train(1, progress=False)
    tr.save(run)                                             # checkpoint A: step 1
    tr.train(1, progress=False)
    snaps = snapshot_save(monkeypatch, tr, run, tmp_path / "B")  # checkpoint B: step 2
    old, new = states(snaps.paths[0]), states(run)
    assert (old[0], new[0]) == (1, 2)
    assert all(torch.equal(new[1][f"model.{k}"], v) for k, v in tr.net.state_dict().items())
    labels = snaps.labels
    commit, finish = labels.index("replace config.json.next"), labels.index("replace config.json")
    tensor_files = ["model.safetensors", "ema.safetensors", "optimizer.safetensors",
                    "state.safetensors"]                      # in the order they are written
    written = [[f"mkstemp .{n}.*.tmp", f"fsync .{n}.*.tmp", f"replace {n}"]
               for n in [f + ".next" for f in tensor_files] + ["config.json.next"]]
    assert labels == ["start", *sum(written[:4], []), "fsync dir",        # phase 1
                      *written[4], "fsync dir",                           # phase 2: commit
                      *[f"replace {n}" for n in tensor_files], "fsync dir",  # phase 3
                      "replace config.json", "fsync dir"], labels         # phase 4
    tr.train(1, progress=False)                               # the next save: C, step 3
    newest = None
    for i, (label, snap) in enumerate(zip(labels, snaps.paths)):
        before = contents(snap)
        assert_same(states(snap), new if i >= commit else old)  # new exactly from the commit on
        assert contents(snap) == before, f"loading changed the directory ({label})"
        assert (snap / "config.json.next").exists() == (commit <= i < finish), label
        # The next save (C) from this state: its phase 0 finishes a pending commit and
        # deletes stray files; every kill point of phase 0 loads as this state's checkpoint,
        # and when C's first new file is created (phases 1-4 are the ones checked above for
        # B) the committed files alone are left.
        nested = snapshot_save(monkeypatch, tr, snap, tmp_path / f"C{i:02d}", until="mkstemp")
        for again in nested.paths:
            assert_same(states(again), new if i >= commit else old)
        first_write = nested.paths[-1]
        assert nested.labels[-1] == "mkstemp .model.safetensors.next.*.tmp"
        assert sorted(n for n in os.listdir(first_write) if not n.endswith(".tmp")) == FILES
        newest = newest or states(snap)
        assert newest[0] == 3 and sorted(os.listdir(snap)) == FILES, label  # no strays
        assert_same(states(snap), newest)


def test_failed_save_keeps_the_previous_or_commits_the_new(tmp_path, monkeypatch):
    """An OSError (disk full) before the commit leaves the previous checkpoint and no new
    files; after the commit the new checkpoint is the one that loads."""
    sde = sd.VPSDE()
    torch.manual_seed(0)
    model = sd.ScoreModel(MLP(2, hidden=8, depth=1), sde)
    save_checkpoint(tmp_path, model, step=1)
    before = contents(tmp_path)
    real_replace = os.replace

    def failing_on(name):
        def replace(src, dst):
            if os.path.basename(dst) == name:
                raise OSError("disk full")
            return real_replace(src, dst)
        return replace
    with monkeypatch.context() as m:
        m.setattr(os, "replace", failing_on("config.json.next"))   # the commit itself fails
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(tmp_path, model, step=2)
    assert contents(tmp_path) == before and load_checkpoint(tmp_path).step == 1
    with monkeypatch.context() as m:
        m.setattr(os, "replace", failing_on("model.safetensors"))  # fails after the commit
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(tmp_path, model, step=2)
    assert load_checkpoint(tmp_path).step == 2 and (tmp_path / "config.json.next").exists()
    save_checkpoint(tmp_path, model, step=3)                     # rolls forward, then saves
    assert load_checkpoint(tmp_path).step == 3 and sorted(os.listdir(tmp_path)) == \
        ["config.json", "model.safetensors"]


def test_damaged_commit_record_stops_a_save(tmp_path):
    torch.manual_seed(0)
    model = sd.ScoreModel(MLP(2, hidden=8, depth=1), sd.VPSDE())
    save_checkpoint(tmp_path, model, step=1)
    (tmp_path / "config.json.next").write_text("{")
    for call in (lambda: load_checkpoint(tmp_path), lambda: save_checkpoint(tmp_path, model)):
        with pytest.raises(CheckpointError, match="config.json.next: not valid JSON") as err:
            call()
        assert "\n" not in str(err.value)
    assert (tmp_path / "config.json.next").read_text() == "{"   # nothing was touched


def test_save_every_needs_a_directory():
    tr = Trainer(MLP(2, hidden=8, depth=1), sd.VPSDE(), load_dataset("gmm", n=16),
                 TrainConfig(steps=2, batch_size=4))
    with pytest.raises(ValueError, match="save_every needs directory"):
        tr.train(save_every=1, progress=False)
    with pytest.raises(ValueError, match="save_every must be an integer >= 1"):
        tr.train(save_every=0, directory="x", progress=False)


# -- 2. the real command line, killed with SIGKILL ---------------------------------------------
TOTAL, EVERY = 20, 4
RUN = ["--data", "gmm", "--n", "200", "--hidden", "16", "--depth", "1", "--batch-size", "32",
       "--dtype", "float64", "--seed", "3", "--log-every", "4", "--no-progress"]

# Runs ``scoresde.cli.main(plan["argv"])`` after installing the hook that plan describes.
DRIVER = r'''
import json, os, signal, sys
plan = json.loads(sys.argv[1])
from scoresde.cli import main
from scoresde.training import Trainer

def die():
    os.kill(os.getpid(), signal.SIGKILL)

kill, k = plan.get("kill"), plan.get("step")
if plan.get("copy_every"):      # reference run: also save a copy at every multiple of N steps
    step = Trainer.train_step
    def train_step(self):
        loss = step(self)
        if self.step % plan["copy_every"] == 0:
            self.save(os.path.join(plan["copies"], f"at-{self.step}"))
        return loss
    Trainer.train_step = train_step
if kill == "update":          # mid-step k: optimizer.step() done, no EMA update, no step += 1
    update_ema = Trainer._update_ema
    def patched(self):
        if self.step + 1 == k:
            die()
        return update_ema(self)
    Trainer._update_ema = patched
elif kill == "save":            # in the save at step k, right after the nth os.replace onto NAME
    save, replace, state = Trainer.save, os.replace, {"active": False, "seen": 0}
    def patched_save(self, directory):
        state["active"] = self.step == k
        try:
            return save(self, directory)
        finally:
            state["active"] = False
    def patched_replace(src, dst):
        replace(src, dst)
        if state["active"] and os.path.basename(dst) == plan["onto"]:
            state["seen"] += 1
            if state["seen"] == plan["nth"]:
                die()
    Trainer.save, os.replace = patched_save, patched_replace
sys.exit(main(plan["argv"]))
'''


def start(plan, cwd):
    """The driver running ``plan`` in a subprocess (stdout and stderr captured)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    env.pop("SCORESDE_TRACEBACK", None)
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(plan)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def drive(plan, cwd):
    """Run ``plan`` to its end; (returncode, stdout, stderr)."""
    proc = start(plan, cwd)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


class Reference:
    """The uninterrupted run (no --save-every), started in the background:
    ``reference / "run"`` is the run directory at step TOTAL, ``reference / "at-<step>"`` a
    copy of its checkpoint at each multiple of EVERY steps. ``/`` waits for the run."""

    def __init__(self, base):
        self.base = base
        self.proc = start({"argv": ["train", "--out", str(base / "run"), "--steps", str(TOTAL),
                                    *RUN], "copy_every": EVERY, "copies": str(base)}, base)

    def __truediv__(self, name):
        if self.proc is not None:
            out, err = self.proc.communicate(timeout=300)
            assert self.proc.returncode == 0, err
            assert f"trained {TOTAL} steps (to step {TOTAL})" in out
            self.proc = None
        return self.base / name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = Reference(tmp_path_factory.mktemp("reference"))
    yield ref
    if ref.proc is not None:
        ref.proc.kill()
        ref.proc.communicate()


# (command, where the child kills itself, step on disk afterwards (None: no checkpoint yet),
#  whether a commit is pending (config.json.next present))
NEW, RESUME = "new", "resume"
KILLS = [
    # the first save, between its tensor writes (model.next and ema.next written)
    (NEW, {"kill": "save", "step": 4, "onto": "ema.safetensors.next", "nth": 1}, None, False),
    # started afresh; mid-step 6: optimizer.step() done, EMA and step counter not
    (NEW, {"kill": "update", "step": 6}, 4, False),
    # resumed at 4; right after the step-8 save committed (config.json.next), nothing renamed
    (RESUME, {"kill": "save", "step": 8, "onto": "config.json.next", "nth": 1}, 8, True),
    # resumed at 8; the step-12 save rolls the pending step-8 save forward (its renames
    # include the 1st onto optimizer.safetensors), then is killed between its own renames
    # (the 2nd). (Kills inside a roll forward: the in-process test above, every boundary.)
    (RESUME, {"kill": "save", "step": 12, "onto": "optimizer.safetensors", "nth": 2}, 12, True),
]


def test_killed_training_resumes_bit_identically(reference, tmp_path):
    out = tmp_path / "run"
    argv = {NEW: ["train", "--out", str(out), "--steps", str(TOTAL), "--save-every",
                  str(EVERY), *RUN],
            RESUME: ["train", "--out", str(out), "--resume", "--steps", str(TOTAL),
                     "--save-every", str(EVERY), "--no-progress"]}
    for command, plan, step, pending in KILLS:
        returncode, _, err = drive({"argv": argv[command], **plan}, cwd=tmp_path)
        assert returncode == -signal.SIGKILL, (plan, returncode, err)
        if step is None:                      # killed before the first save committed
            assert not has_checkpoint(out) and (out / "model.safetensors.next").exists()
            with pytest.raises(CheckpointError, match="missing"):
                load_checkpoint(out)
            continue
        before = contents(out)
        assert_same(states(out), states(reference / f"at-{step}"))   # loads, and is exact
        assert contents(out) == before, "loading changed the directory"
        assert (out / "config.json.next").exists() == pending, plan
    returncode, stdout, err = drive({"argv": argv[RESUME]}, cwd=tmp_path)
    assert returncode == 0, err
    assert f"resuming {out} at step 12 of {TOTAL}" in stdout
    assert sorted(os.listdir(out)) == FILES                          # nothing stray is left

    from safetensors.torch import load_file
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors",
                 "state.safetensors"):
        full, resumed = load_file(reference / "run" / name), load_file(out / name)
        assert full.keys() == resumed.keys() and full
        assert all(torch.equal(full[k], resumed[k]) for k in full), name
    ref_record = json.loads((reference / "run" / "config.json").read_text())
    record = json.loads((out / "config.json").read_text())
    assert record["step"] == ref_record["step"] == TOTAL
    assert record["extra"] == ref_record["extra"]                    # loss history too


# -- 3. the command line on corrupted runs ------------------------------------------------------
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_sample_on_a_corrupted_run_is_one_line(reference, tmp_path, capsys, monkeypatch, kind):
    run = tmp_path / "run"
    shutil.copytree(reference / "run", run)
    named = corrupt(run, kind)
    forbid_unpickling(monkeypatch)
    monkeypatch.delenv("SCORESDE_TRACEBACK", raising=False)
    status = main(["sample", "--run", str(run), "--steps", "2", "--num", "4", "--no-progress",
                   "--out", str(tmp_path / "s.png")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"scoresde sample: error: {named}: "), lines[0]
    assert not (tmp_path / "s.png").exists()


# -- 4. nothing in the package unpickles --------------------------------------------------------
PICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve",
            "marshal"}


def unpickling_calls(source, filename):
    """Lines of ``source`` that import a pickle module, call torch.load without
    weights_only=True, or call numpy.load with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{filename}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in PICKLERS or (
                    node.module == "torch" and any(a.name == "load" for a in node.names)):
                found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            kw = {k.arg: k.value for k in node.keywords}
            if node.func.attr == "load" and name == "torch" and not (
                    isinstance(kw.get("weights_only"), ast.Constant)
                    and kw["weights_only"].value is True):
                found.append(f"{filename}:{node.lineno}: torch.load without weights_only=True")
            if node.func.attr == "load" and name in ("np", "numpy") and (
                    not isinstance(kw.get("allow_pickle"), ast.Constant)
                    or kw["allow_pickle"].value is not False):
                found.append(f"{filename}:{node.lineno}: numpy.load without allow_pickle=False")
            if name in PICKLERS:
                found.append(f"{filename}:{node.lineno}: {name}.{node.func.attr}")
    return found


def test_the_checker_finds_unpickling():
    bad = ("import pickle\nfrom torch import load\nimport torch, numpy as np\n"
           "torch.load(f)\ntorch.load(f, weights_only=False)\nnp.load(f)\n"
           "torch.load(f, map_location='cpu', weights_only=True)\n"
           "np.load(f, allow_pickle=False)\n")
    assert [line.split(":")[1] for line in unpickling_calls(bad, "x.py")] == \
        ["1", "2", "4", "5", "6"]


PICKLE_CODE = re.compile(r"\b(?:import\s+(?:_|c)?[pP]ickle|from\s+(?:_|c)?[pP]ickle\s+import"
                         r"|(?:_|c)?[pP]ickle\.\w+)")


def grep_unpickling(text, filename):
    """The plain-text check: every ``torch.load(`` (code or prose) has weights_only=True
    before its closing parenthesis; ``pickle`` appears only as a word in prose."""
    found = []
    for match in re.finditer(r"torch\.load\(", text):
        depth, end = 1, match.end()
        while depth and end < len(text):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        if "weights_only=True" not in text[match.end():end]:
            found.append(f"{filename}:{text.count(chr(10), 0, match.start()) + 1}: "
                         f"torch.load( without weights_only=True")
    for match in PICKLE_CODE.finditer(text):
        found.append(f"{filename}:{text.count(chr(10), 0, match.start()) + 1}: "
                     f"{match.group(0)}")
    return found


def test_package_source_never_unpickles():
    found, files = [], 0
    for package in ("scoresde", "solvers"):
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8") as f:
                        text = f.read()
                    where = os.path.relpath(path, ROOT)
                    found += unpickling_calls(text, where) + grep_unpickling(text, where)
                    files += 1
    assert files > 20 and found == []
    assert grep_unpickling("x = torch.load(f,\n map_location='cpu')\nimport pickle\n"
                           "y = pickle.loads(b)  # never pickle\n", "x.py") == \
        ["x.py:1: torch.load( without weights_only=True", "x.py:3: import pickle",
         "x.py:4: pickle.loads"]
