"""The import layers of the two packages, read from the source with ``ast``.

solvers/ is the numerics and never imports scoresde. Inside scoresde every module
belongs to a component (its top-level module or subpackage: ``sdes``, ``samplers``, ...)
and the components form the layers below, lowest first. A module may import its own
component and the components of lower layers, never one of its own layer or above, so the
table is a strict order with no upward arrow. Every import counts, including those
inside functions. A new module needs a row here.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

ROOT = Path(__file__).resolve().parents[1]

LAYERS: List[Tuple[str, ...]] = [
    ("_shapes", "_stats"),                   # tensor shapes and statistics, no diffusion
    ("sdes",),                               # forward SDEs (checks from solvers.validation)
    ("_validation",),                        # entry-point checks that know SDEs and networks
    ("score", "oracles", "grids", "nets"),   # score models, closed forms, time grids, networks
    ("dynamics", "losses", "data", "guidance"),  # reverse SDE / PF-ODE, losses, data, guided scores
    ("samplers", "likelihood"),              # sample(), log_likelihood()
    ("inpainting",),                         # inpaint(), built on the samplers' updates
    ("distributed",),                        # torch.distributed sample/likelihood, ranks
    ("checkpoint",),                         # saving and loading models
    ("training",),                           # Trainer
    ("interop",),                            # diffusers / k-diffusion models plug in
    ("__init__",),                           # the package's public names
    ("cli",),                                # the command line
]
LAYER = {component: i for i, row in enumerate(LAYERS) for component in row}


def _module_name(path: Path) -> Tuple[List[str], bool]:
    """(dotted parts, is a package __init__) of a source file under ROOT."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return parts[:-1], True
    return parts, False


def _imports(path: Path) -> Iterator[Tuple[int, List[str]]]:
    """(line, dotted parts of the imported module) for every import in ``path``; ``from
    X import y`` yields X.y when y is a submodule of X, else X."""
    parts, is_package = _module_name(path)
    package = parts if is_package else parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = base + (node.module.split(".") if node.module else [])
            else:
                module = node.module.split(".")
            for alias in node.names:
                sub = ROOT.joinpath(*module, alias.name)
                is_module = sub.with_suffix(".py").exists() or sub.is_dir()
                yield node.lineno, module + [alias.name] if is_module else module


def _component(parts: List[str]) -> str:
    """``scoresde.sdes.base`` -> ``sdes``; the package itself -> ``__init__``."""
    return parts[1] if len(parts) > 1 else "__init__"


def _sources(package: str) -> List[Path]:
    return sorted(ROOT.joinpath(package).rglob("*.py"))


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_solvers_never_imports_scoresde():
    bad = [f"{_where(path, line)} imports {'.'.join(module)}"
           for path in _sources("solvers") for line, module in _imports(path)
           if module[0] == "scoresde"]
    assert not bad, "solvers/ must not import scoresde:\n" + "\n".join(bad)


def test_every_scoresde_component_has_a_layer():
    missing = sorted({_component(_module_name(path)[0]) for path in _sources("scoresde")}
                     - set(LAYER))
    assert not missing, f"add these scoresde components to LAYERS: {missing}"


def test_scoresde_imports_only_lower_layers():
    bad = []
    for path in _sources("scoresde"):
        own = _component(_module_name(path)[0])
        for line, module in _imports(path):
            if module[0] != "scoresde" or _component(module) == own:
                continue
            target = _component(module)
            if LAYER.get(target, len(LAYERS)) >= LAYER.get(own, -1):
                bad.append(f"{_where(path, line)} imports {'.'.join(module)}: {own!r} "
                           f"(layer {LAYER.get(own)}) may import only layers below it, and "
                           f"{target!r} is layer {LAYER.get(target)}")
    assert not bad, "imports against the layers of tests/test_layers.py:\n" + "\n".join(bad)


def test_score_does_not_import_dynamics():
    path = ROOT / "scoresde" / "score.py"
    bad = [f"{_where(path, line)} imports {'.'.join(module)}"
           for line, module in _imports(path) if module[:2] == ["scoresde", "dynamics"]]
    assert not bad, "score.py must not import dynamics.py:\n" + "\n".join(bad)
