"""Checkpoints: a run directory of safetensors files and one JSON file, never pickle.

Layout of a checkpoint directory::

    config.json            format/version, the network (registered class name, its config(),
                           dtype), prediction type and time input, the SDE (type name and
                           parameters), data spec, step, training config, optimizer
                           hyper-parameters and non-tensor state, trainer state, and the
                           size and SHA-256 of every tensor file below
    model.safetensors      the network's state_dict
    ema.safetensors        the EMA network's state_dict (optional)
    optimizer.safetensors  the optimizer's per-parameter state tensors (optional),
                           keys "state.<param index>.<name>"
    state.safetensors      other tensors (optional): "sde.betas" for a DiscreteVPSDE,
                           "generator.state" for the trainer's torch.Generator

Loading reads only JSON and safetensors (no pickle, no imports by name): a missing,
truncated or corrupt file, a checksum mismatch or a network that does not match the stored
weights raises :class:`CheckpointError`, one line naming the file and the problem.

Crash safety
------------
A save replaces the whole checkpoint atomically: a process killed at any instant (SIGKILL,
power loss after the directory fsyncs) leaves a directory that loads as either the previous
checkpoint or the new one, never a mix and never nothing (except before the very first save
has committed, when there is no checkpoint yet). Each write below is "atomic" in the usual
sense: a temporary file ``.NAME.*.tmp`` in the same directory, written, flushed and
fsync'ed, then ``os.replace``'d onto its name, so a name never refers to a partial file.
A save (:func:`save_checkpoint`) runs these phases:

  0. Recover: if a commit record ``config.json.next`` is present (a save was killed after
     committing), finish that save first (phases 3-4 with its file list). Then delete stray
     ``NAME.next`` and ``.*.tmp`` files, left by a save killed before committing.
  1. Write every new tensor file as ``NAME.next`` (atomically); fsync the directory.
  2. Commit: write ``config.json.next`` (atomically); fsync the directory. Its existence
     is the commit record: every ``NAME.next`` it lists is complete and durable.
  3. ``os.replace`` each ``NAME.next`` -> ``NAME``; fsync the directory.
  4. ``os.replace`` ``config.json.next`` -> ``config.json``; fsync the directory.

Loading never changes the directory. If ``config.json.next`` exists it is the current
record, and each file it lists is read from ``NAME.next`` if that exists, else ``NAME``;
otherwise ``config.json`` is the record and ``NAME`` the files (stray ``.next`` files
without a commit record are ignored). Every file is checked against the record's size and
SHA-256 before it is parsed.

Why every kill point is safe (the state seen by a loader after the kill):

* Before or during phase 1 (and during phase 0's deletions): no ``config.json.next``, so
  the loader reads ``config.json`` and the ``NAME`` files, which phases 0-1 never touch
  (they create, replace or delete only ``.next`` and temporary files): the previous
  checkpoint, intact.
* Phase 2 is one ``os.replace``: before it, the previous checkpoint as above; after it,
  the new record with every listed ``NAME.next`` complete (written and fsync'ed in phase 1).
* During phase 3 (or a phase-0 roll forward), after any number of renames: for each listed
  name either ``NAME.next`` still exists (the new file) or the rename happened and ``NAME``
  is that same new file. So the loader, following ``config.json.next``, reads exactly the
  new checkpoint. (The previous one is gone from here on; the new one is readable.)
* Phase 4 is one ``os.replace``: before it, as in phase 3 with no ``.next`` tensor file
  left; after it, ``config.json`` is the new record and the ``NAME`` files the new files.
* A save killed in phase 0 leaves the same states as a save killed in phases 3-4 or before
  phase 1, and the next save starts again from phase 0, so recovery is idempotent.
* Durability: the directory fsync after phase 1 makes the ``NAME.next`` renames durable
  before the commit record; the one after phase 2 makes the record durable before any
  ``NAME`` is replaced; the one after phase 3 makes those renames durable before
  ``config.json`` changes. So after a power loss the same cases hold.

The tests (tests/scoresde/test_crash_safety.py) snapshot the directory after every
``os.fsync`` / ``os.replace`` / ``os.unlink`` of a save and of a recovery and load each
snapshot, and kill ``scoresde train`` with SIGKILL mid-step and at several of these points.
Not covered: two processes saving into one directory at the same time (one writer per run
directory), and a reader racing a writer (retry the load).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from ._validation import check_instance
from .nets import NETS, build_net
from .score import ScoreModel
from .sdes import SDE, SDES, DiscreteVPSDE

FORMAT = "scoresde-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.safetensors"
TENSOR_FILES = (MODEL_FILE, EMA_FILE, OPTIMIZER_FILE, STATE_FILE)
NEXT = ".next"                          # suffix of a save's new files until they are renamed
PENDING_CONFIG_FILE = CONFIG_FILE + NEXT  # the commit record of a save not yet finished

_DTYPES = {str(d).replace("torch.", ""): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64)}


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, or does not match the model.

    The message is always one line (whitespace, including newlines from a parser's own
    message, is collapsed) and starts with the path of the file at fault.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as err:  # optional dependency (the "cli" extra)
        raise ImportError("checkpoints need safetensors: pip install safetensors (or "
                          "pip install 'scoresde[cli]')") from err
    return st


# -- JSON encoding of Python values (tuples kept distinct from lists) ---------------------------
def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).replace("torch.", "")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} value {value!r} in a checkpoint's "
                    f"JSON; only numbers, strings, booleans, None, lists, tuples and dicts")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        if set(value) == {"__dtype__"}:
            return _DTYPES[value["__dtype__"]]
        return {k: _decode(v) for k, v in value.items()}
    return value


# -- crash-safe writing (see "Crash safety" above) -----------------------------------------------
def _write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, written,
    flushed and fsync'ed, then ``os.replace``'d onto ``path``. The directory itself is
    fsync'ed by the caller (:func:`_fsync_dir`) at the save's barriers."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fsync_dir(directory: str) -> None:
    """Make the renames in ``directory`` durable (POSIX; a no-op where directories cannot be
    opened)."""
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _finish_commit(directory: str, names) -> None:
    """Phases 3-4: rename each listed ``NAME.next`` that still exists onto ``NAME``, then the
    commit record onto ``config.json``; idempotent, so it also rolls a killed save forward."""
    for name in names:
        src = os.path.join(directory, name + NEXT)
        if os.path.exists(src):
            os.replace(src, os.path.join(directory, name))
    _fsync_dir(directory)
    os.replace(os.path.join(directory, PENDING_CONFIG_FILE), os.path.join(directory, CONFIG_FILE))
    _fsync_dir(directory)


def _is_stray(entry: str) -> bool:
    """A ``NAME.next`` tensor file or a ``.NAME*.tmp`` temporary file of a save."""
    names = TENSOR_FILES + (CONFIG_FILE,)
    if entry in tuple(n + NEXT for n in TENSOR_FILES):
        return True
    return (entry.startswith(".") and entry.endswith(".tmp")
            and any(entry[1:].startswith(n + ".") for n in names))


def _recover(directory: str) -> None:
    """Phase 0: finish a committed save that was killed, then delete the files of a save
    that was killed before committing (which no loader reads)."""
    pending = os.path.join(directory, PENDING_CONFIG_FILE)
    if os.path.exists(pending):
        try:
            record = _read_record(pending)
        except CheckpointError as err:  # damaged from outside: a kill cannot leave it so
            raise CheckpointError(f"{err}; a save cannot tell which files it commits, so it "
                                  f"stops here: move {pending} away (or choose another "
                                  f"directory)") from None
        _finish_commit(directory, [n for n in record["files"] if n in TENSOR_FILES])
    stray = sorted(e for e in os.listdir(directory) if _is_stray(e))
    for entry in stray:
        os.unlink(os.path.join(directory, entry))
    if stray:
        _fsync_dir(directory)


def _discard_uncommitted(directory: str, names) -> None:
    """After an error before the commit: remove this save's ``NAME.next`` files (best
    effort; the next save removes whatever is left)."""
    for name in names:
        try:
            os.unlink(os.path.join(directory, name + NEXT))
        except OSError:
            pass


def has_checkpoint(directory: str) -> bool:
    """Whether ``directory`` holds a checkpoint (committed, possibly not yet finished)."""
    return any(os.path.exists(os.path.join(directory, n))
               for n in (CONFIG_FILE, PENDING_CONFIG_FILE))


def _tensor_bytes(tensors: Dict[str, Tensor]) -> bytes:
    # clone: safetensors refuses tensors sharing storage; cpu + contiguous for serialization
    return _safetensors().save({k: v.detach().to("cpu").contiguous().clone()
                                for k, v in tensors.items()})


# -- SDEs ---------------------------------------------------------------------------------------
def sde_to_json(sde: SDE) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    """The SDE as ({"type", "params"}, tensors); a DiscreteVPSDE stores its betas as a tensor."""
    name = type(sde).__name__
    if SDES.get(name) is not type(sde):
        raise TypeError(f"cannot store SDE of type {name}; supported: {', '.join(SDES)}")
    if isinstance(sde, DiscreteVPSDE):
        return {"type": name, "params": {}}, {"sde.betas": sde.betas}
    return {"type": name, "params": _encode(sde.config())}, {}


def sde_from_json(spec: Dict[str, Any], tensors: Dict[str, Tensor], where: str = "") -> SDE:
    """Rebuild an SDE stored by :func:`sde_to_json`."""
    try:
        cls = SDES[spec["type"]]
        if cls is DiscreteVPSDE:
            return DiscreteVPSDE(tensors["sde.betas"])
        return cls(**_decode(spec["params"]))
    except KeyError as err:
        raise CheckpointError(f"{where}: SDE record {spec!r} is incomplete or of unknown type "
                              f"(missing {err}); known types: {', '.join(SDES)}") from None
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: cannot rebuild the SDE from {spec!r}: {err}") from None


# -- optimizer state ------------------------------------------------------------------------------
def _optimizer_to_json(optimizer: torch.optim.Optimizer
                       ) -> Tuple[Dict[str, Any], Dict[str, Tensor]]:
    state = optimizer.state_dict()
    tensors, other = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                other.setdefault(str(pid), {})[key] = _encode(value)
    return {"type": type(optimizer).__name__, "param_groups": _encode(state["param_groups"]),
            "state": other}, tensors


def _optimizer_from_json(record: Dict[str, Any], tensors: Dict[str, Tensor]) -> Dict[str, Any]:
    state: Dict[int, Dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, entries in record.get("state", {}).items():
        state.setdefault(int(pid), {}).update(_decode(entries))
    return {"state": state, "param_groups": _decode(record["param_groups"])}


# -- networks -----------------------------------------------------------------------------------
def _split_model(model) -> Tuple[nn.Module, Optional[ScoreModel]]:
    if isinstance(model, ScoreModel):
        if not isinstance(model.net, nn.Module):
            raise TypeError("model.net must be an nn.Module to be saved in a checkpoint")
        return model.net, model
    if isinstance(model, nn.Module):
        return model, None
    raise TypeError(f"model must be a ScoreModel or an nn.Module, got {type(model).__name__}")


def _net_record(net: nn.Module) -> Dict[str, Any]:
    name = type(net).__name__
    registered = NETS.get(name) is type(net)
    config = _encode(net.config()) if registered else None
    floats = [p.dtype for p in net.state_dict().values() if p.is_floating_point()]
    return {"class": name, "registered": registered, "config": config,
            "dtype": str(floats[0] if floats else torch.get_default_dtype()).replace("torch.", "")}


def _check_and_load(net: nn.Module, tensors: Dict[str, Tensor], path: str) -> None:
    """load_state_dict with a CheckpointError listing what does not match."""
    own = net.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing from the file: {', '.join(missing[:5])}"
                         + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"not in the model: {', '.join(unexpected[:5])}"
                         + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:5])
                         + (f" (+{len(shapes) - 5} more)" if len(shapes) > 5 else ""))
        raise CheckpointError(f"{path}: the weights do not match the network "
                              f"{type(net).__name__} ({'; '.join(parts)}); the architecture "
                              f"differs from the one that was saved")
    net.load_state_dict(tensors, strict=True)


# -- saving ---------------------------------------------------------------------------------------
def save_checkpoint(directory: str, model, sde: Optional[SDE] = None, *,
                    ema: Optional[nn.Module] = None,
                    optimizer: Optional[torch.optim.Optimizer] = None,
                    generator: Optional[torch.Generator] = None, step: int = 0,
                    train_config: Optional[Dict[str, Any]] = None,
                    data: Optional[Dict[str, Any]] = None,
                    extra: Optional[Dict[str, Any]] = None) -> str:
    """Write a checkpoint directory (created if needed); returns its path.

    The save is crash-safe as a whole: killed at any point, the directory loads as the
    previous checkpoint or as this one (see "Crash safety" in the module docstring). One
    process at a time may save into a directory.

    Args:
        directory: the run directory.
        model: a :class:`ScoreModel` (its net, sde, prediction and time input are stored)
            or a bare network (then ``sde`` is required and the prediction is "epsilon").
            A network rebuilt automatically on load must be registered in
            ``scoresde.nets.NETS`` (MLP, UNet, or ``register_net``); others are loaded by
            passing ``net=`` to :func:`load_checkpoint`.
        sde: the SDE, when ``model`` is a bare network.
        ema: the EMA copy of the network (or a ScoreModel around it).
        optimizer: its state is stored as tensors + JSON.
        generator: a torch.Generator whose state is stored (the trainer's).
        step: the training step.
        train_config: JSON-able training configuration.
        data: JSON-able data spec (``Dataset.spec``).
        extra: any other JSON-able record (stored under "extra").
    """
    net, score_model = _split_model(model)
    if score_model is not None:
        if sde is not None and sde is not score_model.sde:
            raise ValueError("sde differs from model.sde; pass one or the other")
        sde = score_model.sde
        model_info = {"prediction": score_model.prediction,
                      "time_input": score_model.time_input,
                      "time_scale": score_model.time_scale}
    else:
        if sde is None:
            raise ValueError("sde is required when model is a bare network")
        model_info = {"prediction": "epsilon", "time_input": None, "time_scale": 999.0}
    check_instance("sde", sde, SDE, "a scoresde SDE (VPSDE, VESDE, ...)")
    os.makedirs(directory, exist_ok=True)

    sde_record, state_tensors = sde_to_json(sde)
    files: Dict[str, bytes] = {MODEL_FILE: _tensor_bytes(net.state_dict())}
    record: Dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "model": {**_net_record(net), **model_info},
        "sde": sde_record, "data": _encode(data), "step": int(step),
        "train": _encode(train_config), "optimizer": None, "generator": None,
        "extra": _encode(extra),
    }
    if ema is not None:
        ema_net, _ = _split_model(ema)
        files[EMA_FILE] = _tensor_bytes(ema_net.state_dict())
    if optimizer is not None:
        record["optimizer"], opt_tensors = _optimizer_to_json(optimizer)
        files[OPTIMIZER_FILE] = _tensor_bytes(opt_tensors)
    if generator is not None:
        record["generator"] = {"device": str(generator.device)}
        state_tensors["generator.state"] = generator.get_state()
    if state_tensors:
        files[STATE_FILE] = _tensor_bytes(state_tensors)

    record["files"] = {name: {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
                       for name, blob in files.items()}
    text = json.dumps(record, indent=2, allow_nan=True)  # Python floats round-trip exactly

    # The protocol of "Crash safety" in the module docstring.
    _recover(directory)                                                  # phase 0
    committed = False
    try:
        for name, blob in files.items():                                 # phase 1
            _write_file(os.path.join(directory, name + NEXT), blob)
        _fsync_dir(directory)
        _write_file(os.path.join(directory, PENDING_CONFIG_FILE),        # phase 2
                    text.encode("utf-8"))
        committed = True
    except BaseException:
        if not committed:
            _discard_uncommitted(directory, files)
        raise
    _fsync_dir(directory)
    _finish_commit(directory, files)                                     # phases 3-4
    return directory


# -- loading --------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns; unpacks as ``model, sde, config = ...``.

    Attributes:
        model: a ScoreModel around the EMA network (if stored and ``use_ema``) or the network.
        sde: the rebuilt SDE.
        config: the parsed config.json.
        net: the trained network (raw weights).
        ema_net: the EMA network, or None.
        step: the stored training step.
        optimizer_state: a state_dict for ``optimizer.load_state_dict``, or None.
        generator_state: the stored generator state (uint8 tensor), or None.
        directory: where it was loaded from.
    """

    model: ScoreModel
    sde: SDE
    config: Dict[str, Any]
    net: nn.Module
    ema_net: Optional[nn.Module]
    step: int
    optimizer_state: Optional[Dict[str, Any]]
    generator_state: Optional[Tensor]
    directory: str

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.sde, self.config))


def _read_record(path: str) -> Dict[str, Any]:
    """Parse and check one record file (config.json or config.json.next); a missing file
    raises FileNotFoundError, anything else wrong a CheckpointError naming ``path``."""
    with open(path, "rb") as f:
        text = f.read()
    if not text:
        raise CheckpointError(f"{path}: empty file (0 bytes); the checkpoint record is lost "
                              f"or was never written")
    try:
        record = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); the file is truncated or "
                              f"corrupt") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a scoresde checkpoint (format "
                              f"{record.get('format') if isinstance(record, dict) else None!r},"
                              f" expected {FORMAT!r})")
    if record.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {record.get('version')!r} "
                              f"is not supported (this scoresde reads version {VERSION})")
    for key in ("model", "sde", "files", "step"):
        if key not in record:
            raise CheckpointError(f"{path}: the record {key!r} is missing")
    files = record["files"]
    if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("bytes"), int)
            and isinstance(v.get("sha256"), str) for v in files.values()):
        raise CheckpointError(f"{path}: the record 'files' is malformed (expected "
                              f"{{name: {{'bytes': int, 'sha256': str}}}})")
    try:
        return _decode(record)
    except KeyError as err:
        raise CheckpointError(f"{path}: unknown dtype {err} in the record") from None


def _current_record(directory: str) -> Tuple[Dict[str, Any], str, bool]:
    """(record, its path, pending): the commit record ``config.json.next`` if present (a save
    committed but not finished), else ``config.json``."""
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: checkpoint directory does not exist")
    for name, pending in ((PENDING_CONFIG_FILE, True), (CONFIG_FILE, False)):
        path = os.path.join(directory, name)
        try:
            return _read_record(path), path, pending
        except FileNotFoundError:
            continue
    raise CheckpointError(f"{os.path.join(directory, CONFIG_FILE)}: missing; {directory} is "
                          f"not a scoresde checkpoint directory")


def _is_safetensors(blob: bytes) -> bool:
    try:
        _safetensors().load(blob)
    except Exception:  # safetensors raises its own SafetensorError
        return False
    return True


def _read_files(directory: str, record: Dict[str, Any], cfg_path: str,
                pending: bool) -> Dict[str, Tuple[str, bytes]]:
    """{name: (path, bytes)} of every tensor file the record lists, each checked against the
    recorded size and SHA-256 before anything is parsed. With a pending commit record a file
    is read from ``NAME.next`` while that exists, else from ``NAME``.

    All files are checked before one is blamed: an intact safetensors file whose size differs
    from the record means the record comes from another save (a copied config.json), so the
    error names the record; otherwise the first truncated, then the first corrupt file.
    """
    cfg = os.path.basename(cfg_path)
    blobs: Dict[str, Tuple[str, bytes]] = {}
    foreign, truncated, corrupt = [], [], []
    for name in TENSOR_FILES:
        expected = record["files"].get(name)
        if expected is None:
            continue
        for candidate in ([name + NEXT] if pending else []) + [name]:
            path = os.path.join(directory, candidate)
            try:
                with open(path, "rb") as f:
                    blob = f.read()
                break
            except FileNotFoundError:
                continue
        else:
            raise CheckpointError(f"{os.path.join(directory, name)}: missing (listed in "
                                  f"{cfg_path})")
        blobs[name] = (path, blob)
        size = expected["bytes"]
        if len(blob) != size:
            if _is_safetensors(blob):
                foreign.append(f"{path} is a complete safetensors file of {len(blob)} bytes, "
                               f"{cfg} records {size}")
            else:
                what = "truncated" if len(blob) < size else "longer than written"
                truncated.append(f"{path}: {what}: {len(blob)} bytes, {cfg} records {size}")
        elif hashlib.sha256(blob).hexdigest() != expected["sha256"]:
            corrupt.append(f"{path}: corrupt: its SHA-256 differs from the one recorded in "
                           f"{cfg} (the file was modified, or {cfg} belongs to another save)")
    if foreign:
        raise CheckpointError(f"{cfg_path}: does not describe the files beside it "
                              f"({foreign[0]}): {cfg} and the tensor files come from different "
                              f"saves (was {cfg} copied from another run?)")
    if truncated or corrupt:
        raise CheckpointError((truncated + corrupt)[0])
    return blobs


def _parse_tensors(directory: str, name: str, blobs: Dict[str, Tuple[str, bytes]],
                   cfg_path: str) -> Dict[str, Tensor]:
    if name not in blobs:
        raise CheckpointError(f"{os.path.join(directory, name)}: not listed in {cfg_path}")
    path, blob = blobs[name]
    try:
        return _safetensors().load(blob)
    except Exception as err:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"{path}: not a valid safetensors file: {err}") from None


def load_checkpoint(directory: str, *, net: Optional[nn.Module] = None,
                    device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
                    use_ema: bool = True) -> Checkpoint:
    """Rebuild the model, SDE and training state from a checkpoint directory.

    Args:
        directory: a directory written by :func:`save_checkpoint` (or ``Trainer.save``).
        net: a network to load the weights into (needed for unregistered classes); by
            default the stored registered class is rebuilt from its stored config.
        device: where to put the networks (default CPU).
        dtype: floating dtype of the networks (default the stored one).
        use_ema: ``Checkpoint.model`` uses the EMA weights when they were stored.

    Raises:
        CheckpointError: missing/truncated/corrupt files, unknown SDE or network, or
            weights that do not fit the network.
    """
    directory = os.fspath(directory)
    record, cfg_path, pending = _current_record(directory)
    info = record["model"]

    blobs = _read_files(directory, record, cfg_path, pending)

    def read(name: str) -> Dict[str, Tensor]:
        return _parse_tensors(directory, name, blobs, cfg_path)

    extra_tensors = read(STATE_FILE) if STATE_FILE in record["files"] else {}
    sde = sde_from_json(record["sde"], extra_tensors, cfg_path)

    def make_net() -> nn.Module:
        if not info.get("registered") or info.get("class") not in NETS:
            raise CheckpointError(f"{cfg_path}: the network class {info.get('class')!r} is "
                                  f"not registered in scoresde.nets (registered: "
                                  f"{', '.join(sorted(NETS))}); pass net= to load_checkpoint "
                                  f"or register the class with scoresde.nets.register_net")
        try:
            return build_net(info["class"], _decode(info["config"]))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{cfg_path}: cannot build {info['class']} from "
                                  f"{info['config']!r}: {err}") from None

    target_dtype = dtype or _DTYPES.get(info.get("dtype"), torch.get_default_dtype())

    def load_into(module: nn.Module, name: str) -> nn.Module:
        module.to(dtype=target_dtype)  # before loading, so float64 weights stay exact
        _check_and_load(module, read(name), os.path.join(directory, name))
        return module.to(device=device)

    main_net = load_into(net if net is not None else make_net(), MODEL_FILE)
    ema_net = None
    if EMA_FILE in record["files"]:
        ema_net = load_into(make_net() if net is None else copy.deepcopy(net), EMA_FILE)
        ema_net.requires_grad_(False)

    optimizer_state = None
    if record.get("optimizer") is not None:
        optimizer_state = _optimizer_from_json(
            record["optimizer"], read(OPTIMIZER_FILE))
    generator_state = extra_tensors.get("generator.state")

    try:
        model = ScoreModel(ema_net if (use_ema and ema_net is not None) else main_net, sde,
                           prediction=info.get("prediction", "epsilon"),
                           time_input=info.get("time_input"),
                           time_scale=info.get("time_scale", 999.0))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{cfg_path}: invalid model record {info!r}: {err}") from None
    return Checkpoint(model, sde, record, main_net, ema_net, int(record["step"]),
                      optimizer_state, generator_state, directory)


__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint",
           "has_checkpoint", "sde_to_json", "sde_from_json", "SDES"]
