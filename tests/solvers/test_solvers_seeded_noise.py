"""Counter-based noise (solvers.SeededNoise): Philox-4x32-10 against Random123's
known-answer vectors, the normals' law, and independence from the batch."""
import math

import pytest
import torch

import solvers
from solvers.noise import BROWNIAN, PRIOR, PROBES, STEPS, philox4x32

# Random123 1.14, tests/kat_vectors: "philox4x32 10", counter (4 words), key (2 words), output.
KAT = [
    ((0x00000000,) * 4, (0x00000000,) * 2, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert philox4x32(torch.tensor(counter), key).tolist() == list(expected)
    # batched: the same block anywhere in a tensor of counters
    many = torch.tensor([counter] * 3).reshape(3, 1, 4)
    assert philox4x32(many, key).reshape(3, 4).tolist() == [list(expected)] * 3


def _normal_cdf(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def test_normals_law_200k():
    z = solvers.SeededNoise(12345).draw(torch.empty(400, 500, dtype=torch.float64)).flatten()
    n = z.numel()
    assert n == 200_000 and torch.isfinite(z).all()
    se = 1 / math.sqrt(n)
    assert abs(z.mean()) < 5 * se                              # E z = 0
    assert abs(z.var() - 1) < 5 * math.sqrt(2) * se             # var z = 1 (sd of s^2: sqrt(2/n))
    assert abs((z ** 3).mean()) < 5 * math.sqrt(15) * se        # E z^3 = 0 (var 15)
    assert abs((z ** 4).mean() - 3) < 5 * math.sqrt(96) * se    # E z^4 = 3 (var 96)
    # Kolmogorov-Smirnov against Phi: D_n < 1.63 / sqrt(n) at the 1% level
    s = z.sort().values
    cdf = _normal_cdf(s)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = torch.maximum(i / n - cdf, cdf - (i - 1) / n).max()
    assert d < 1.63 / math.sqrt(n)
    # neighbouring entries, rows and draws are uncorrelated
    grid = z.reshape(400, 500)
    assert abs((grid[:, :-1] * grid[:, 1:]).mean()) < 5 * se * math.sqrt(n / grid[:, 1:].numel())
    noise = solvers.SeededNoise(12345)
    a, b = (noise.draw(torch.empty(200, 500, dtype=torch.float64)) for _ in range(2))
    assert abs((a * b).mean()) < 5 / math.sqrt(a.numel())


def test_signs_are_balanced():
    s = solvers.SeededNoise(7).draw_signs(torch.empty(100, 1000, dtype=torch.float64))
    assert set(s.unique().tolist()) == {-1.0, 1.0}
    assert abs(s.mean()) < 5 / math.sqrt(s.numel())


def test_rows_do_not_depend_on_the_batch():
    like = torch.empty(10, 3, 5, dtype=torch.float64)
    big = solvers.SeededNoise(3)
    draws = [big.draw(like) for _ in range(3)]
    # rows 4..6 drawn alone, through offset, and as a chunk of a source
    for small in (solvers.SeededNoise(3, offset=4), solvers.SeededNoise(3).rows(4)):
        for k in range(3):
            assert torch.equal(small.draw(like[4:7]), draws[k][4:7])
    # different draws, streams, seeds and rows differ
    assert not torch.equal(draws[0], draws[1])
    assert not torch.equal(solvers.SeededNoise(3, stream=PRIOR).draw(like), draws[0])
    assert not torch.equal(solvers.SeededNoise(4).draw(like), draws[0])
    assert not torch.equal(draws[0][0], draws[0][1])
    assert len({PRIOR, STEPS, BROWNIAN, PROBES}) == 4


def test_float32_is_the_float64_draw_rounded():
    z64 = solvers.SeededNoise(9).draw(torch.empty(4, 7, dtype=torch.float64))
    z32 = solvers.SeededNoise(9).draw(torch.empty(4, 7, dtype=torch.float32))
    assert z32.dtype == torch.float32 and torch.equal(z32, z64.float())


def test_entropies_per_row():
    e = solvers.SeededNoise(5).entropies(6)
    assert solvers.SeededNoise(5, offset=2).entropies(4) == e[2:]
    assert len(set(e)) == 6 and all(0 <= v < 2 ** 62 for v in e)


@pytest.mark.parametrize("seed,exc", [(-1, ValueError), (2 ** 64, ValueError), (1.0, TypeError),
                                      (True, TypeError)])
def test_bad_seed(seed, exc):
    with pytest.raises(exc, match="seed must be an integer in"):
        solvers.SeededNoise(seed)


def test_torchsde_rows_follow_their_own_paths():
    """Per-row entropies: a row's Brownian path is that of its entropy alone."""
    x0 = torch.zeros(5, 2, dtype=torch.float64)
    ent = solvers.SeededNoise(1).entropies(5)

    def run(x, e):
        return solvers.sdeint_torchsde(lambda t, x: -x, lambda t, x: 1.0, x, 1.0, 0.0,
                                       method="euler", dt=0.1, entropies=e).x

    full = run(x0, ent)
    assert torch.equal(run(x0[2:4], ent[2:4]), full[2:4])
    assert not torch.equal(full[0], full[1])
    with pytest.raises(ValueError, match="one integer per row"):
        run(x0, ent[:2])
