"""README.md's Python quick start runs as written (it once failed on its second statement),
and the log-densities it prints agree with the closed form."""
import io
import os
import re
from contextlib import redirect_stdout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_quick_start_runs_and_its_likelihoods_match_the_closed_form():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        (code,) = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    namespace = {}
    with redirect_stdout(io.StringIO()):
        exec(compile(code, "README.md", "exec"), namespace)
    res, ll, data = namespace["res"], namespace["ll"], namespace["data"]
    assert res.x.shape == (1000, 2) and res.nfe > 0
    exact = data.log_prob(res.x[:10], 1e-5)
    assert (ll.logp - exact).abs().max() < 1e-3, (ll.logp, exact)
