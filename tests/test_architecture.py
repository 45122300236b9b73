"""docs/architecture.md's worked example (adding a sampler) runs as written and works."""
import io
import os
import re
from contextlib import redirect_stdout

import numpy as np

from scoresde.samplers import SOLVERS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_adding_a_sampler_example_runs_and_converges_at_second_order():
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(code.strip().splitlines()) < 60   # the sampler itself is under 40 lines
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            exec(compile(code, "docs/architecture.md", "exec"), {})
    finally:
        SOLVERS.pop("ode_ab2", None)
    rows = [line.split() for line in out.getvalue().strip().splitlines()]
    steps = [int(r[0]) for r in rows]
    assert [int(r[1]) for r in rows] == steps           # NFE == steps
    errors = [float(r[2]) for r in rows]
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - 2) < 0.3, (slope, errors)
