"""The docs run: every ```python block of README.md and docs/*.md, and every command of
docs/cli.md, is executed here (one test each), and the output the page shows is checked.

Rules (stated for writers in docs/architecture.md, "Tests"):

* A ```python block runs as written, in a fresh namespace, in an empty temporary working
  directory, with torch's out-of-the-box state (default dtype float32; the dtype, the global
  random state, the number of threads and the solver registry are restored afterwards). Blocks are named after the
  file and their number among its python blocks: ``docs/sampling.md#2``.
* If the next fenced block is ```text, separated from the python block by nothing or by one
  sentence ending in ":" ("It prints:"), the block's stdout must match it line by line:
  numbers agree to one unit of the last digit shown (integers exactly), ``...`` alone on a
  line stands for any number of lines and inside a line for any text.
* A block that cannot run in the tests (a GPU, minutes of training) is fenced ```py, and
  the paragraph before it says why: "not run in the tests: <reason>". Any other python-ish
  fence (```python3, ```pycon, ```Python, ...) is an error, so nothing slips through.
* docs/cli.md: every command of its ```bash blocks and every ``$ `` line of its ```text
  transcripts runs in page order in one temporary directory (later commands use the runs
  earlier ones wrote), in process through ``scoresde.cli.main``, with sizes reduced by the
  rule that page states (:func:`quick_argv`). A command must exit 0 and the files it says it
  writes must exist; a transcript showing ``scoresde <command>: error: ...`` must exit 2
  with that line on stderr; the ``--list-solvers`` listing must be the real one.
  ``pip install`` lines are skipped.
"""
from __future__ import annotations

import contextlib
import glob
import io
import math
import os
import re
import shlex
import textwrap
from dataclasses import dataclass
from typing import List, Optional

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT).replace(os.sep, "/")
                               for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
RUN, NOT_RUN = "python", "py"
PYTHONISH = re.compile(r"^(py\w*|python\w*|pycon|ipython\w*|pytb)$", re.I)
NOT_RUN_REASON = re.compile(r"not run in the tests: \S", re.I)


# -- markdown ---------------------------------------------------------------------------------
@dataclass
class Block:
    page: str           # path relative to the repository root
    lang: str           # the fence's info string, e.g. "python", "text", "" (plain)
    line: int           # 1-based line of the opening fence
    code: str           # the lines between the fences
    before: str         # text between the previous fence (or the top) and this one


def parse_blocks(page: str, text: Optional[str] = None) -> List[Block]:
    """The fenced blocks of ``page`` (its file, or ``text``), in order."""
    if text is None:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = f.read()
    lines = text.split("\n")
    blocks, prose, i = [], [], 0
    while i < len(lines):
        m = re.match(r"^\s*```(?!`)(.*)$", lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        start, lang = i, m.group(1).strip()
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            i += 1
        if i == len(lines):
            raise AssertionError(f"{page}:{start + 1}: fence ```{lang} is never closed")
        code = textwrap.dedent("\n".join(lines[start + 1:i]) + "\n")   # a fence in a list item
        blocks.append(Block(page, lang, start + 1, code, "\n".join(prose)))
        prose, i = [], i + 1
    return blocks


def output_block(blocks: List[Block], k: int) -> Optional[Block]:
    """The ```text block that shows the output of blocks[k], if any: the next block, with
    nothing or one sentence ending in ':' between them."""
    if k + 1 >= len(blocks) or blocks[k + 1].lang != "text":
        return None
    between = blocks[k + 1].before.strip()
    if between and not (between.endswith(":") and "\n\n" not in between):
        return None
    return blocks[k + 1]


def python_blocks():
    """pytest params: (blocks of the page, index) of every ```python block, id page#n."""
    params = []
    for page in PAGES:
        blocks = parse_blocks(page)
        n = 0
        for k, b in enumerate(blocks):
            if b.lang == RUN:
                n += 1
                params.append(pytest.param(blocks, k, id=f"{page}#{n}"))
    return params


# -- comparing printed output -----------------------------------------------------------------
NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"


def _unit(text: str) -> float:
    """One unit of the last digit of the number ``text`` ("1.25e-03" -> 1e-5; "120" -> 0)."""
    mantissa, _, exponent = text.lower().partition("e")
    if "." not in mantissa:
        return 0.0 if not exponent else 10.0 ** int(exponent)
    decimals = len(mantissa.split(".")[1])
    return 10.0 ** (int(exponent or 0) - decimals)


def line_matches(expected: str, actual: str) -> bool:
    """``actual`` reads as ``expected``: the same text (runs of spaces equal), numbers within
    one unit of the expected one's last digit (integers exactly), ``...`` any text."""
    pattern, numbers = "", []
    for token in re.split(rf"(\.\.\.|{NUMBER}|\s+)", expected.strip()):
        if not token:
            continue
        if token == "...":
            pattern += ".*?"
        elif token.isspace():
            pattern += r"\s+"
        elif re.fullmatch(NUMBER, token):
            pattern += f"({NUMBER})"
            numbers.append(token)
        else:
            pattern += re.escape(token)
    m = re.fullmatch(pattern, actual.strip())
    if m is None:
        return False
    for want, got in zip(numbers, m.groups()):
        tol = _unit(want) * (1 + 1e-9)
        if not abs(float(got) - float(want)) <= tol:
            return False
    return True


def output_matches(expected: List[str], actual: List[str]) -> bool:
    """Line-by-line match; a line that is only ``...`` matches any number of lines."""
    if not expected:
        return not actual
    if expected[0].strip() == "...":
        return any(output_matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and line_matches(expected[0], actual[0]) \
        and output_matches(expected[1:], actual[1:])


def _lines(text: str) -> List[str]:
    return [line.rstrip() for line in text.strip("\n").split("\n")] if text.strip() else []


def test_output_comparison_rules():
    """The comparison itself: last-digit tolerance, exact integers, wildcards."""
    assert line_matches("NLL 1.5553 +- 0.0205 nats", "NLL  1.5554 +- 0.0205 nats")
    assert not line_matches("NLL 1.5553 +- 0.0205 nats", "NLL 1.5555 +- 0.0205 nats")
    assert line_matches("err 8.83e-03", "err 8.84e-03")
    assert not line_matches("err 8.83e-03", "err 8.85e-03")
    assert not line_matches("NFE 120", "NFE 121")
    assert not line_matches("torch.Size([1000, 2])", "torch.Size([1000, 3])")
    assert line_matches("tensor([-1.0147, ...])", "tensor([-1.0147, -0.6693])")
    assert not line_matches("shape [2]", "shape [2] float32")
    assert output_matches(["a", "...", "z 1.0"], ["a", "b", "c", "z 1.04"])
    assert output_matches(["a", "...", "z"], ["a", "z"])
    assert not output_matches(["a", "z"], ["a", "b", "z"])


# -- python blocks ----------------------------------------------------------------------------
@contextlib.contextmanager
def users_session(tmp_path, monkeypatch):
    """A user's fresh torch (float32 default), in ``tmp_path``; restored afterwards."""
    from scoresde.samplers import SOLVERS

    dtype, threads, solvers = torch.get_default_dtype(), torch.get_num_threads(), dict(SOLVERS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch.set_default_dtype(torch.float32)
    try:
        with torch.random.fork_rng(devices=[]):   # a block's torch.manual_seed stays inside
            yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        SOLVERS.clear()
        SOLVERS.update(solvers)


@pytest.mark.parametrize("blocks, k", python_blocks())
def test_python_block(blocks, k, tmp_path, monkeypatch):
    block = blocks[k]
    # padded so that a traceback names the line of the markdown file
    code = compile("\n" * block.line + block.code, os.path.join(ROOT, block.page), "exec")
    out = io.StringIO()
    with users_session(tmp_path, monkeypatch), contextlib.redirect_stdout(out):
        exec(code, {"__name__": "__docs__"})
    shown = output_block(blocks, k)
    if shown is not None:
        expected, actual = _lines(shown.code), _lines(out.getvalue())
        assert output_matches(expected, actual), (
            f"{block.page}:{shown.line}: the ```text block shows\n" + "\n".join(expected)
            + "\n\nbut the block printed\n" + "\n".join(actual))


def fence_problems(blocks: List[Block]) -> List[str]:
    """```python runs; ```py needs "not run in the tests: <reason>" in the paragraph before
    it; any other python-ish fence, or an unlabelled fence holding Python, is a problem."""
    problems = []
    for b in blocks:
        where = f"{b.page}:{b.line}"
        if b.lang == NOT_RUN:
            paragraph = b.before.strip().split("\n\n")[-1]
            if not NOT_RUN_REASON.search(" ".join(paragraph.split())):
                problems.append(f"{where}: a ```py block (not run) needs the sentence "
                                f"before it to say 'not run in the tests: <reason>'")
        elif b.lang != RUN and PYTHONISH.match(b.lang):
            problems.append(f"{where}: fence ```{b.lang}: use ```python (run by the "
                            f"tests) or ```py (not run, with the reason)")
        elif b.lang == "" and re.search(r"^(>>> |import \w|from [\w.]+ import )", b.code, re.M):
            problems.append(f"{where}: an unlabelled fence holding Python: label it "
                            f"```python (run by the tests) or ```py (not run)")
    return problems


def test_fence_rules_catch_what_would_slip_through():
    page = "\n".join([
        "Needs a GPU, so not run in the tests: CUDA only.", "```py", "x.cuda()", "```",
        "A reason-less one:", "```py", "x.cuda()", "```",
        "```python3", "print(1)", "```", "```pycon", ">>> 1", "```",
        "```", "import torch", "```", "```text", "import this is prose", "```"])
    problems = fence_problems(parse_blocks("page.md", page))
    assert [p.split(":")[1] for p in problems] == ["6", "9", "12", "15"], problems
    (item,) = parse_blocks("page.md", "1. In a list:\n\n   ```python\n   x = 1\n   ```\n")
    assert (item.lang, item.line, item.code) == ("python", 3, "x = 1\n")


def test_every_python_fence_runs_or_says_why_not():
    problems = [p for page in PAGES for p in fence_problems(parse_blocks(page))]
    assert not problems, "\n".join(problems)


# -- the commands of docs/cli.md --------------------------------------------------------------
CLI_PAGE = "docs/cli.md"
TRAINING_STEPS = {"train": ("--steps", "--save-every", "--log-every"), "demo": ("--train-steps",)}
SAMPLER_STEPS, MAX_SAMPLER_STEPS = {"sample": ("--steps",), "inpaint": ("--steps",)}, 20
POINTS, MAX_POINTS = {"sample": ("--num",), "likelihood": ("--n",), "inpaint": ("--num",),
                      "demo": ("--num", "--test")}, 16


@dataclass
class Command:
    line: int             # 1-based line in the page
    argv: List[str]       # after "scoresde" (or "python -m scoresde.cli")
    shown: List[str]      # the output the transcript shows ([] for a ```bash line)


def cli_commands(page: str = CLI_PAGE, text: Optional[str] = None) -> List[Command]:
    """The scoresde commands of ``page`` in order: the lines of its ```bash blocks and the
    ``$ `` lines of its ```text transcripts (with the output shown under each)."""
    commands = []
    for b in parse_blocks(page, text):
        if b.lang not in ("bash", "text"):
            continue
        for j, line in enumerate(b.code.rstrip("\n").split("\n")):
            if b.lang == "text":
                if not line.startswith("$ "):
                    if commands and commands[-1].line > b.line:
                        commands[-1].shown.append(line)
                    continue
                line = line[2:]
            words = shlex.split(line, comments=True)
            if not words or words[:2] == ["pip", "install"]:
                continue   # installing is not the tests' job
            if words[:3] == ["python", "-m", "scoresde.cli"]:
                words = ["scoresde"] + words[3:]
            assert words[0] == "scoresde", f"{page}:{b.line + 1 + j}: not a scoresde command: {line}"
            commands.append(Command(b.line + 1 + j, words[1:], []))
    return commands


def _subparser(command: str):
    from scoresde.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    return sub.choices[command]


def quick_argv(argv: List[str]) -> List[str]:
    """The rule docs/cli.md states: training step counts divided by 100 (rounded up), sampler
    steps at most 20, numbers of points at most 16; the number of training steps and of
    points, when left at the default, are given explicitly, reduced the same way (not
    --steps with --resume: that is the stored total)."""
    from scoresde.cli.train import SHARED_DEFAULTS

    command, out = argv[0], list(argv)
    rules = [(flag, lambda n: math.ceil(n / 100)) for flag in TRAINING_STEPS.get(command, ())]
    rules += [(flag, lambda n: min(n, MAX_SAMPLER_STEPS)) for flag in SAMPLER_STEPS.get(command, ())]
    rules += [(flag, lambda n: min(n, MAX_POINTS)) for flag in POINTS.get(command, ())]
    for flag, reduce in rules:
        if flag in out[:-1]:
            i = out.index(flag) + 1
            if re.fullmatch(r"\d+", out[i]):
                out[i] = str(reduce(int(out[i])))
            continue
        if flag in ("--save-every", "--log-every") or flag in SAMPLER_STEPS.get(command, ()) \
                or (flag == "--steps" and "--resume" in out):
            continue   # off, derived from --steps, the solver's own, or the stored total
        default = (SHARED_DEFAULTS["steps"] if (command, flag) == ("train", "--steps") else
                   _subparser(command).get_default(flag[2:].replace("-", "_")))
        out += [flag, str(reduce(default if default is not None else MAX_POINTS))]
    return out


def test_quick_argv_is_the_rule_the_page_states():
    assert quick_argv(["train", "--data", "moons", "--steps", "3000", "--out", "r"]) == \
        ["train", "--data", "moons", "--steps", "30", "--out", "r"]
    assert quick_argv(["train", "--out", "r", "--resume", "--steps", "400", "--save-every", "150"]) \
        == ["train", "--out", "r", "--resume", "--steps", "4", "--save-every", "2"]
    assert quick_argv(["train", "--data", "gmm", "--out", "r"])[-2:] == ["--steps", "30"]
    assert quick_argv(["train", "--out", "r", "--resume"]) == ["train", "--out", "r", "--resume"]
    assert quick_argv(["sample", "--run", "r", "--steps", "1000", "--num", "5000"]) == \
        ["sample", "--run", "r", "--steps", "20", "--num", "16"]
    assert quick_argv(["sample", "--run", "r", "--num", "0"]) == ["sample", "--run", "r", "--num", "0"]
    assert quick_argv(["likelihood", "--run", "r"]) == ["likelihood", "--run", "r", "--n", "16"]
    assert quick_argv(["demo"]) == ["demo", "--train-steps", "25", "--num", "16", "--test", "16"]
    text = "\n".join(["```bash", "pip install -e .", "scoresde train --out r  # a run", "```",
                      "```text", "$ scoresde sample --run r", "sampled", "wrote x.png",
                      "$ python -m scoresde.cli demo", "```"])
    assert [(c.line, c.argv, c.shown) for c in cli_commands("p.md", text)] == [
        (3, ["train", "--out", "r"], []), (6, ["sample", "--run", "r"], ["sampled", "wrote x.png"]),
        (9, ["demo"], [])]


class CliSession:
    """Runs the page's commands in order in one directory, each at most once."""

    def __init__(self, directory):
        self.directory, self.results = str(directory), []

    def run_upto(self, k: int):
        """(status, stdout, stderr) of command k, running the ones before it first."""
        from scoresde.cli import main

        commands = cli_commands()
        while len(self.results) <= k:
            argv = quick_argv(commands[len(self.results)].argv)
            out, err, cwd, dtype = io.StringIO(), io.StringIO(), os.getcwd(), torch.get_default_dtype()
            os.chdir(self.directory)
            torch.set_default_dtype(torch.float32)
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                        torch.random.fork_rng(devices=[]):   # train seeds torch's global RNG
                    status = main(argv)
            finally:
                os.chdir(cwd)
                torch.set_default_dtype(dtype)
            self.results.append((argv, status, out.getvalue(), err.getvalue()))
        return self.results[k]


@pytest.fixture(scope="module")
def cli_session(tmp_path_factory):
    import matplotlib

    matplotlib.use("Agg")
    saved = os.environ.pop("SCORESDE_TRACEBACK", None)
    yield CliSession(tmp_path_factory.mktemp("cli_docs"))
    if saved is not None:
        os.environ["SCORESDE_TRACEBACK"] = saved


def _written(argv: List[str], lines: List[str]) -> List[str]:
    """The files a command says it writes: its --out / --save-samples, its "wrote X" lines."""
    paths = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--out", "--save-samples")]
    return paths + [m.group(1) for m in (re.match(r"wrote (\S+)", s) for s in lines) if m]


@pytest.mark.parametrize("k", [pytest.param(k, id=f"{CLI_PAGE}:{c.line} {c.argv[0]}")
                               for k, c in enumerate(cli_commands())])
def test_cli_command(k, cli_session):
    command = cli_commands()[k]
    argv, status, out, err = cli_session.run_upto(k)
    where = f"{CLI_PAGE}:{command.line}: scoresde {' '.join(argv)}"
    error = [s for s in command.shown if re.match(r"scoresde \w+: error: ", s)]
    if error:   # a transcript of a user error: status 2 and that one line on stderr
        assert status == 2 and output_matches(error, _lines(err)), \
            f"{where}: exit {status}, stderr\n{err}\nbut the page shows\n{error[0]}"
        return
    assert status == 0, f"{where}: exit {status}\n{err}"
    for path in _written(argv, command.shown + _lines(out)):
        assert os.path.exists(os.path.join(cli_session.directory, path)), \
            f"{where}: says it writes {path}, which does not exist"
    if "--list-solvers" in argv:
        assert output_matches(command.shown, _lines(out)), \
            f"{where}: prints\n{out}\nbut the page shows\n" + "\n".join(command.shown)
