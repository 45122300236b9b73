"""Helpers shared by the benchmark tables: machine description, timing, Markdown, plots."""
from __future__ import annotations

import datetime as _dt
import importlib
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Config:
    """What every table needs to know about the run."""
    quick: bool
    device: torch.device
    img_dir: str          # where the PNGs go
    img_rel: str          # the same folder relative to the Markdown file


# -- machine --------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version_of(module: str) -> Optional[str]:
    """The module's __version__, or None when it is not importable."""
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:  # noqa: BLE001 - any import failure means "absent"
        return None


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_rows(device: torch.device, command: str) -> List[List[str]]:
    import scoresde
    where = os.path.relpath(os.path.dirname(os.path.dirname(scoresde.__file__)), ROOT)
    rows = [["scoresde", f"{scoresde.__version__} imported from `{where}`"],
            ["CPU", f"{cpu_model()}, {os.cpu_count()} logical cores"],
            ["torch threads", str(torch.get_num_threads())],
            ["device", device_name(device)],
            ["python", platform.python_version()],
            ["torch", torch.__version__]]
    for mod in ("scipy", "torchdiffeq", "torchsde", "diffusers"):
        rows.append([mod, version_of(mod) or "not installed"])
    # importing k_diffusion needs torchvision & co.; the benchmark loads its sampling.py alone
    from .kdiffusion_loader import installed_version
    kd = installed_version()
    rows.append(["k_diffusion", f"{kd} (sampling.py only, installed with --no-deps)" if kd
                 else "not installed"])
    rows += [["commit", git_revision()],
             ["date (UTC)", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")],
             ["command", f"`{command}`"]]
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return "cpu"


# -- timing ---------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of fn takes, with the device synchronized on both sides."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_time(fn: Callable[[], object], device: torch.device, repeats: int,
                warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(wall(fn, device) for _ in range(repeats))


# -- Markdown -------------------------------------------------------------------------
def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
             align: Optional[str] = None) -> str:
    """A GitHub Markdown table; align is one character per column (l, r, c)."""
    align = align or "l" + "r" * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(str(h) for h in headers) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_e(v: Optional[float], digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}e}"


def fmt_f(v: Optional[float], digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


# -- plots ----------------------------------------------------------------------------
def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, cfg: Config, name: str) -> str:
    """Save fig as <img_dir>/<name>.png and return the Markdown image path."""
    os.makedirs(cfg.img_dir, exist_ok=True)
    fig.savefig(os.path.join(cfg.img_dir, name + ".png"), dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return f"{cfg.img_rel}/{name}.png"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def to_float(x) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def seeded(seed: int, device: Optional[torch.device] = None) -> torch.Generator:
    return torch.Generator(device=device or "cpu").manual_seed(seed)


Section = Dict[str, object]  # {"markdown": str, "targets": [(name, ok, detail)], ...}
