import pytest
import torch

from solvers import CountingFunction, GaussianNoise, RecordingNoise, ReplayNoise, SolverError

from solvers_problems import DTYPE


def test_counting_function_counts_and_passes_through():
    f = CountingFunction(lambda a, b=1: a + b)
    assert f(1) == 2 and f(1, b=5) == 6 and f.calls == 2
    with pytest.raises(TypeError, match="callable"):
        CountingFunction(3)


def test_gaussian_noise_is_torch_randn_with_the_generator():
    like = torch.empty(4, 3, dtype=DTYPE)
    noise = GaussianNoise(torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    for _ in range(3):
        assert torch.equal(noise.draw(like), torch.randn((4, 3), generator=g, dtype=DTYPE))
    assert noise.draw(like.float()).dtype == torch.float32
    with pytest.raises(TypeError, match="generator"):
        GaussianNoise(9)


def test_recording_and_replay():
    like = torch.empty(2, 2, dtype=DTYPE)
    recorder = RecordingNoise(GaussianNoise(torch.Generator().manual_seed(1)))
    drawn = [recorder.draw(like) for _ in range(3)]
    replay = ReplayNoise(recorder.draws)
    assert all(torch.equal(replay.draw(like), z) for z in drawn)
    with pytest.raises(SolverError, match="draw number 4"):
        replay.draw(like)
    with pytest.raises(ValueError, match=r"shape \(2, 2\) but the update needs shape \(3, 2\)"):
        ReplayNoise(drawn).draw(torch.empty(3, 2))
    assert ReplayNoise(drawn).draw(like.float()).dtype == torch.float32
