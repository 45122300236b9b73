"""The install story: the README's test command, .ci/run and pyproject's extras agree.

A fresh virtual environment gets only what ``pip install -e ".[test]"`` pulls, so every
third-party module that the test suite or the package imports must come from the base
dependencies or the ``test`` extra (matplotlib once passed CI only because the machine
happened to have it).
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import sys

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10
    tomllib = pytest.importorskip("tomli")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _requirement_names(reqs) -> set:
    """Distribution names (normalised) of PEP 508 requirement strings."""
    names = set()
    for req in reqs:
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req).group(0)
        names.add(re.sub(r"[-_.]+", "-", name).lower())
    return names


def _imported_top_level(folders) -> dict:
    """{top-level module: first file importing it} over the .py files under ``folders``."""
    found = {}
    for folder in folders:
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(base, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        mods = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        mods = [node.module]
                    else:
                        continue
                    for mod in mods:
                        found.setdefault(mod.split(".")[0], os.path.relpath(path, ROOT))
    return found


def test_test_extra_covers_every_import_of_the_tests_and_package():
    project = _pyproject()["project"]
    allowed = (_requirement_names(project["dependencies"])
               | _requirement_names(project["optional-dependencies"]["test"]))
    dists = md.packages_distributions()
    local = {"scoresde", "solvers", "tests", "benchmarks"} | {   # the test modules themselves
        name[:-3] for _, _, files in os.walk(os.path.join(ROOT, "tests"))
        for name in files if name.endswith(".py")}
    missing = []
    for mod, where in sorted(_imported_top_level(["tests", "scoresde", "solvers"]).items()):
        if mod in local or mod in sys.stdlib_module_names:
            continue
        owners = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(mod, [mod])}
        # a module may be provided by a dependency of a listed distribution (e.g. tomli)
        if not owners & allowed and not owners & _transitive(allowed):
            missing.append(f"{mod} (imported by {where}; distribution {sorted(owners)})")
    assert not missing, ("not installed by pip install -e '.[test]': " + "; ".join(missing))


def _transitive(names: set) -> set:
    """The installed distributions that ``names`` pull in, recursively."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo.extend(_requirement_names(r for r in reqs if "extra ==" not in r))
    return seen


def test_ci_runs_the_readme_test_command_in_its_own_venv():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    commands = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(commands) == 2, commands          # exactly two set-up commands
    test_command = commands[1]
    assert test_command.startswith("pip install -e \".[test]\"") and "pytest" in test_command
    assert f"python -m {test_command}" in ci     # the same command, run by the venv's python
    assert "python3 -m venv" in ci and "--system-site-packages" not in ci
    assert "torch==2.13.0" in ci
