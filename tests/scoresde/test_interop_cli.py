"""``scoresde sample --diffusers DIR`` and ``scoresde likelihood --diffusers DIR --data FILE``
on a random-init pipeline saved with save_pretrained (issue 14): the commands run, follow
the scheduler's timesteps, and print what the Python API computes."""
from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.cli import main

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=4, in_channels=1, out_channels=1, block_out_channels=(4, 8),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    scheduler = diffusers.DDIMScheduler(clip_sample=False, timestep_spacing="trailing")
    path = tmp_path_factory.mktemp("pipeline")
    diffusers.DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path)
    return path


def run(*argv: str):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def test_sample_follows_the_schedulers_timesteps(pipeline_dir, tmp_path):
    status, out, err = run("sample", "--diffusers", pipeline_dir, "--steps", 3, "--num", 2,
                           "--seed", 5, "--out", tmp_path / "s.png",
                           "--save-samples", tmp_path / "s.npy", "--no-progress")
    assert status == 0, err
    assert "with ddim (timesteps=[999, 666, 332], step_to='stride'): NFE 3" in out
    assert (tmp_path / "s.png").exists()
    got = torch.from_numpy(np.load(tmp_path / "s.npy"))
    score, sde = sd.from_diffusers(pipeline_dir)
    expected = sd.sample(score, sde, (2, 1, 4, 4), "ddim", seed=5, timesteps=[999, 666, 332],
                         step_to="stride").x
    assert torch.equal(got, expected)


def test_likelihood_prints_the_bits_per_dim_of_the_api(pipeline_dir, tmp_path):
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = torch.round((x + 1) * 127.5) / 127.5 - 1
    np.save(tmp_path / "data.npy", x.numpy())
    status, out, err = run("likelihood", "--diffusers", pipeline_dir, "--data",
                           tmp_path / "data.npy", "--rtol", "1e-2", "--atol", "1e-2",
                           "--no-progress")
    assert status == 0, err
    printed = float(re.search(r"bits/dim\s+(\S+)", out).group(1))
    score, sde = sd.from_diffusers(pipeline_dir)
    x8 = ((x.double() + 1) * 127.5).round().to(torch.uint8)
    res = sd.bits_per_dim(score, sde, x8, data_range="[-1,1]", dequantize=True,
                          generator=torch.Generator().manual_seed(0),
                          dtype=next(score.parameters()).dtype,
                          trace="hutchinson", rtol=1e-2, atol=1e-2)
    assert printed == pytest.approx(res.bpd.double().mean().item(), abs=1e-4)
    assert "hutchinson" in out


@pytest.mark.parametrize("argv, message", [
    (("sample", "--diffusers", "{dir}", "--run", "{dir}"), "give one of --run"),
    (("likelihood", "--diffusers", "{dir}"), "--data goes with --diffusers"),
    (("sample", "--diffusers", "{dir}/nowhere"), "is not a directory"),
])
def test_errors_are_one_line(pipeline_dir, argv, message):
    status, _, err = run(*[a.format(dir=pipeline_dir) for a in argv])
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
