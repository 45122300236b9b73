"""diffusers models and schedulers plug in (issue 14): the schedule tables and timesteps
equal diffusers' own, and our ddpm / ddim / dpm_solver++ runs on a small random-init
UNet2DModel equal diffusers' DDPMScheduler / DDIMScheduler / DPMSolverMultistepScheduler
loops on the same timesteps and the same noise, in float64.

diffusers keeps its tables in float32 and DPMSolverMultistepScheduler.step rounds the state
to float32 every step; the reference loops here cast the tables to float64 and call
DPMSolverMultistepScheduler's own update formulas in float64 (``dpm_reference``), so the
comparison is at float64 precision (measured: docs/interop.md). Where diffusers differs by
design the test says so: clip_sample=False; the last step's noise, which diffusers adds
when the last step ends above t = 0, is removed from the reference (our samplers end
noise-free: DDPM Algorithm 2's z = 0 at the last step).
"""
from __future__ import annotations

import copy

import pytest
import torch

import scoresde as sd
from scoresde.interop import diffusers_alphas_cumprod, diffusers_sde

diffusers = pytest.importorskip("diffusers")
from diffusers import (DDIMScheduler, DDPMScheduler,  # noqa: E402
                       DPMSolverMultistepScheduler, UNet2DModel)

F64 = torch.float64
SHAPE = (2, 2, 8, 8)
STEPS = 7
SPACINGS = ("linspace", "leading", "trailing")
#: max |ours - diffusers| / max |diffusers| allowed in float64 (measured: at most 2.6e-13,
#: sample prediction on leading spacing, whose eps = (x - alpha x0)/std at the last
#: timestep divides a cancellation by std = 0.014; <= 6.1e-15 for epsilon and v prediction;
#: the table in docs/interop.md)
TOL = 1e-12


def rel(x, ref) -> float:
    return ((x - ref).abs().max() / ref.abs().max()).item()


def tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).double().eval()


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def config(spacing: str, prediction: str = "epsilon", **kw):
    return dict(num_train_timesteps=1000, timestep_spacing=spacing, prediction_type=prediction,
                steps_offset=1 if spacing == "leading" else 0, **kw)


def prior(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g, dtype=F64), g


def ours(unet, scheduler, solver: str, seed: int, **options):
    score, sde = sd.from_diffusers(unet, scheduler)
    x, g = prior(seed)
    return sd.sample(score, sde, SHAPE, solver, x_T=x, generator=g, **options).x


def reference(unet, s, seed: int, last_noise_free: bool, **step_kw):
    """diffusers' sampling loop (the DDPMPipeline / DDIMPipeline one) with float64 tables."""
    s.alphas_cumprod = s.alphas_cumprod.to(F64)
    if hasattr(s, "final_alpha_cumprod"):
        s.final_alpha_cumprod = s.final_alpha_cumprod.to(F64)
    if hasattr(s, "one"):
        s.one = s.one.to(F64)
    x, g = prior(seed)
    with torch.no_grad():
        for j, t in enumerate(s.timesteps):
            out = unet(x, t).sample
            last = j == len(s.timesteps) - 1
            kw = {**step_kw, "generator": g}
            if last and last_noise_free and isinstance(s, DDIMScheduler):
                kw = {**step_kw, "variance_noise": torch.zeros_like(x)}
            elif last and last_noise_free and t > 0:  # DDPMScheduler adds noise when t > 0
                state = g.get_state()
            x = s.step(out, t, x, **kw).prev_sample
            if last and last_noise_free and isinstance(s, DDPMScheduler) and t > 0:
                z = torch.randn(SHAPE, generator=torch.Generator().set_state(state), dtype=F64)
                x = x - s._get_variance(t) ** 0.5 * z
    return x


def dpm_reference(unet, s, seed: int):
    """DPMSolverMultistepScheduler's loop (its ``step``: model outputs shifted, first order
    at the first and, with final_sigmas_type "zero", the last step) calling its own update
    formulas in float64, on float64 sigmas; ``step`` itself rounds the state to float32."""
    ac = s.alphas_cumprod.to(F64)
    k = s.timesteps
    sig = ((1 - ac[k]) / ac[k]) ** 0.5
    s.sigmas = torch.cat([sig, sig.new_zeros(1)])
    x, _ = prior(seed)
    with torch.no_grad():
        for j, t in enumerate(k):
            s._step_index = j
            m = s.convert_model_output(unet(x, t).sample, sample=x)
            s.model_outputs = s.model_outputs[1:] + [m]
            if j == 0 or j == len(k) - 1:
                x = s.dpm_solver_first_order_update(m, sample=x)
            else:
                x = s.multistep_dpm_solver_second_order_update(s.model_outputs, sample=x)
    return x


# -- the schedule -------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", [
    {"beta_schedule": "linear"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"trained_betas": torch.linspace(1e-4, 0.05, 50).tolist(), "num_train_timesteps": 50},
])
def test_alphas_cumprod_is_diffusers_table(schedule):
    """Our table is diffusers' float32 table bit for bit, and the SDE reproduces it."""
    for cls in (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler):
        s = cls(**schedule)
        table = diffusers_alphas_cumprod(s)
        assert torch.equal(table, s.alphas_cumprod.to(F64)), cls.__name__
    # the SDE's float64 cumulative product of N = 1000 ratios: relative error <= N u = 1.1e-13
    sde = diffusers_sde(s)
    assert (sd.alphas_cumprod(sde) / table - 1).abs().max().item() < 1.2e-13
    betas = sd.betas_from_alphas_cumprod(table)
    assert (torch.cumprod(1 - betas, 0) / table - 1).abs().max().item() < 1.2e-13


def test_alphas_cumprod_of_a_continuous_vp_sde():
    """At t_i = (i + 1)/N the linear VPSDE's alphabar is exp(-(b0 t + (b1 - b0) t^2/2))."""
    sde = sd.VPSDE(0.1, 20.0)
    t = torch.arange(1, 11, dtype=F64) / 10
    expected = torch.exp(-(0.1 * t + 19.9 * t ** 2 / 2))
    assert torch.allclose(sd.alphas_cumprod(sde, N=10), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [1, 3, 7, 10, 333])
def test_timesteps_are_diffusers(spacing, n):
    for solver, cls in (("ddpm", DDPMScheduler), ("ddim", DDIMScheduler),
                        ("dpm_solver++", DPMSolverMultistepScheduler)):
        for offset in (0, 1):
            s = cls(timestep_spacing=spacing, steps_offset=offset)
            s.set_timesteps(n)
            assert sd.diffusers_timesteps(s, n, solver) == s.timesteps.tolist(), (solver, offset)


# -- equal outputs --------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_ddpm_equals_diffusers(unet, spacing, prediction, variance):
    s = DDPMScheduler(variance_type=variance, clip_sample=False, **config(spacing, prediction))
    s.set_timesteps(STEPS)
    x = ours(unet, s, "ddpm", 1, timesteps=s.timesteps, variance=variance)
    ref = reference(unet, s, 1, last_noise_free=True)
    assert rel(x, ref) < TOL


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_equals_diffusers(unet, spacing, prediction, eta):
    s = DDIMScheduler(clip_sample=False, **config(spacing, prediction))
    s.set_timesteps(STEPS)
    x = ours(unet, s, "ddim", 2, timesteps=s.timesteps, eta=eta, step_to="stride")
    ref = reference(unet, s, 2, last_noise_free=True, eta=eta)
    assert rel(x, ref) < TOL


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_dpm_solver_2m_equals_diffusers(unet, spacing, prediction):
    s = DPMSolverMultistepScheduler(**config(spacing, prediction))
    s.set_timesteps(STEPS)
    ts = sd.diffusers_timesteps(s, STEPS, "dpm_solver++")
    x = ours(unet, s, "dpm_solver++", 3, timesteps=ts, order=2)
    assert rel(x, dpm_reference(unet, s, 3)) < TOL
    # diffusers' own step, which rounds the state to float32 each step
    s.set_timesteps(STEPS)
    plain = reference(unet, s, 3, last_noise_free=False)
    assert rel(x, plain) < 1e-6  # measured 1.4e-7 .. 2.7e-7


def test_ddim_next_differs_from_stride_where_diffusers_steps_off_grid(unet):
    """With linspace spacing diffusers' DDIM steps from k to k - N // n, not to the next
    timestep: our default step_to='next' ends each step where the next one starts."""
    s = DDIMScheduler(clip_sample=False, **config("linspace"))
    s.set_timesteps(STEPS)
    nxt = ours(unet, s, "ddim", 2, timesteps=s.timesteps)
    stride = ours(unet, s, "ddim", 2, timesteps=s.timesteps, step_to="stride")
    assert (nxt - stride).abs().max().item() > 1e-3
    # on leading spacing without offset both rules are the same
    s = DDIMScheduler(clip_sample=False, num_train_timesteps=1000, timestep_spacing="leading")
    s.set_timesteps(STEPS)
    a = ours(unet, s, "ddim", 2, timesteps=s.timesteps)
    b = ours(unet, s, "ddim", 2, timesteps=s.timesteps, step_to="stride")
    assert torch.equal(a, b)


def test_network_receives_diffusers_integer_timesteps(unet):
    seen = []

    def spy(x, k):
        seen.append(k.clone())
        return unet(x, k)

    s = DDIMScheduler(clip_sample=False, **config("trailing"))
    s.set_timesteps(STEPS)
    score, sde = sd.from_diffusers(spy, s)
    sd.sample(score, sde, SHAPE, "ddim", timesteps=s.timesteps, generator=torch.Generator(),
              dtype=F64)
    assert all(k.dtype == torch.long for k in seen)
    assert [int(k[0]) for k in seen] == s.timesteps.tolist()
    assert all(torch.equal(k, k[:1].expand(SHAPE[0])) for k in seen)


# -- directories ------------------------------------------------------------------------------
def test_pipeline_directory_round_trip(unet, tmp_path):
    """A DDPMPipeline saved with save_pretrained loads as the same score and SDE."""
    s = DDPMScheduler(clip_sample=False, prediction_type="v_prediction",
                      beta_schedule="squaredcos_cap_v2")
    diffusers.DDPMPipeline(unet=copy.deepcopy(unet).float(), scheduler=s).save_pretrained(tmp_path)
    score, sde = sd.from_diffusers(tmp_path)
    score = score.double()
    direct, sde2 = sd.from_diffusers(copy.deepcopy(unet).float().double(), s)
    assert score.prediction == "v_prediction" and torch.equal(sde.betas, sde2.betas)
    x, _ = prior(0)
    t = torch.tensor([0.3, 0.9], dtype=F64)
    assert torch.equal(score(x, t), direct(x, t))
    assert score.net.sample_shape == (2, 8, 8)
    # the unet folder alone finds the scheduler beside it
    model_only, _ = sd.from_diffusers(tmp_path / "unet")
    assert torch.equal(model_only.double()(x, t), direct(x, t))


def test_model_folder_with_scheduler_given(unet, tmp_path):
    copy.deepcopy(unet).float().save_pretrained(tmp_path / "model")
    s = DDIMScheduler(clip_sample=False)
    s.save_config(tmp_path / "sched")
    for scheduler in (tmp_path / "sched", tmp_path / "sched" / "scheduler_config.json",
                      s, dict(s.config)):
        score, sde = sd.from_diffusers(tmp_path / "model", scheduler)
        assert torch.equal(sd.alphas_cumprod(sde), sd.alphas_cumprod(diffusers_sde(s)))


def test_clip_sample_warns(unet):
    with pytest.warns(UserWarning, match="clip_sample=True"):
        sd.from_diffusers(unet, DDPMScheduler(clip_sample=True))


def test_learned_variance_output_is_split():
    """A model predicting eps and a variance (2C channels, variance_type learned_range)
    gives its first C channels as the noise prediction."""
    torch.manual_seed(0)
    net = UNet2DModel(sample_size=8, in_channels=2, out_channels=4, block_out_channels=(8, 16),
                      layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).double()
    s = DDPMScheduler(variance_type="learned_range", clip_sample=False)
    score, sde = sd.from_diffusers(net, s)
    x, _ = prior(0)
    k = torch.tensor([500, 500])
    eps = net(x, k).sample[:, :2]
    assert torch.equal(score.eps(x, sde.index_to_time(k)), eps)


def test_conditional_unet_with_model_kwargs():
    """A UNet2DConditionModel takes its encoder_hidden_states through model_kwargs, and
    our ddim equals diffusers' DDIM loop with the same conditioning."""
    torch.manual_seed(0)
    net = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=4,
        cross_attention_dim=8, attention_head_dim=2).double().eval()
    cond = torch.randn(SHAPE[0], 3, 8, generator=torch.Generator().manual_seed(9), dtype=F64)
    s = DDIMScheduler(clip_sample=False, **config("leading"))
    s.set_timesteps(STEPS)
    score, sde = sd.from_diffusers(net, s, model_kwargs={"encoder_hidden_states": cond})
    x, g = prior(4)
    ours = sd.sample(score, sde, SHAPE, "ddim", x_T=x, generator=g, timesteps=s.timesteps).x
    s.alphas_cumprod = s.alphas_cumprod.to(F64)
    s.final_alpha_cumprod = s.final_alpha_cumprod.to(F64)
    ref = x.clone()
    with torch.no_grad():
        for k in s.timesteps:
            ref = s.step(net(ref, k, encoder_hidden_states=cond).sample, k, ref).prev_sample
    assert rel(ours, ref) < TOL


def test_exact_likelihood_trace_of_a_diffusers_unet():
    """trace='exact' runs on a diffusers UNet (its backward has no batching rule, so one
    backward pass per basis vector) and equals the trace of the Jacobian built by
    torch.autograd.functional.jacobian, sample by sample, in float64."""
    from scoresde.likelihood import exact_divergence
    from scoresde.dynamics import probability_flow
    score, sde = sd.from_diffusers(tiny_unet(), DDPMScheduler(**config("trailing", clip_sample=False)))
    x, _ = prior(3)
    x = x[:2]
    field = probability_flow(sde, score)
    t = torch.tensor(0.4, dtype=F64)
    _, div = exact_divergence(field, t, x, chunk_size=50)
    for b in range(2):
        jac = torch.autograd.functional.jacobian(lambda y: field(t, y[None])[0], x[b])
        want = jac.reshape(x[b].numel(), x[b].numel()).diagonal().sum()
        assert abs(div[b] - want) <= 1e-12 * abs(want), (div[b].item(), want.item())
