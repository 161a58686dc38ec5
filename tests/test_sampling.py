import math

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from diffprune_core.errors import InputError
from diffprune_core.pipeline import noise_scheduler
from diffprune_core.sampling import ddim_sample, initial_noise, quad_timesteps


def teacher_shaped_unet(seed: int = 0) -> UNet2DModel:
    """A random-init U-Net with the shape of the digits teacher (16x16, one channel)."""
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32, 32),
                       layers_per_block=2, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


@pytest.fixture(scope="module")
def unet():
    return teacher_shaped_unet()


def test_noise_scheduler_is_the_linear_1000_step_schedule():
    betas = noise_scheduler().betas
    assert len(betas) == 1000
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


def test_initial_noise_depends_on_the_seed_alone():
    a = initial_noise(3, 5, (1, 16, 16))
    assert a.shape == (5, 1, 16, 16)
    assert torch.equal(a, initial_noise(3, 5, (1, 16, 16)))
    assert torch.equal(a[:2], initial_noise(3, 2, (1, 16, 16)))
    assert not torch.equal(a, initial_noise(4, 5, (1, 16, 16)))


def test_samples_have_the_model_shape_and_range(unet):
    samples = ddim_sample(unet, n=3, seed=0, steps=3, progress=False)
    assert samples.shape == (3, 1, 16, 16) and samples.dtype == torch.float32
    assert samples.min() >= -1 and samples.max() <= 1


def test_same_seed_same_samples_other_seed_other_samples(unet):
    a = ddim_sample(unet, n=2, seed=7, steps=3, progress=False)
    assert torch.equal(a, ddim_sample(unet, n=2, seed=7, steps=3, progress=False))
    assert not torch.allclose(a, ddim_sample(unet, n=2, seed=8, steps=3, progress=False))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_samples_do_not_depend_on_the_batch_size(unet, eta):
    small = ddim_sample(unet, n=4, seed=1, steps=3, eta=eta, batch_size=2, progress=False)
    large = ddim_sample(unet, n=4, seed=1, steps=3, eta=eta, batch_size=4, progress=False)
    torch.testing.assert_close(small, large, atol=1e-5, rtol=0)


def first_model_input(model, seed: int) -> torch.Tensor:
    inputs = []
    handle = model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    ddim_sample(model, n=2, seed=seed, steps=1, progress=False)
    handle.remove()
    return inputs[0]


def test_two_models_start_from_the_same_noise(unet):
    """A dense and a pruned model given one seed see the same x_T at their first step."""
    x_T = first_model_input(unet, seed=5)
    assert torch.equal(x_T, initial_noise(5, 2, (1, 16, 16)))
    assert torch.equal(first_model_input(teacher_shaped_unet(seed=1), seed=5), x_T)


def test_model_is_left_in_its_training_mode(unet):
    unet.train()
    ddim_sample(unet, n=1, seed=0, steps=1, progress=False)
    assert unet.training
    unet.eval()


def test_per_sample_model_kwargs_are_split_per_batch():
    torch.manual_seed(0)
    conditional = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                              layers_per_block=1, norm_num_groups=4, num_class_embeds=3,
                              down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    labels = torch.tensor([0, 1, 2])
    batched = ddim_sample(conditional, n=3, seed=0, steps=2, batch_size=2, progress=False, labels=labels)
    whole = ddim_sample(conditional, n=3, seed=0, steps=2, batch_size=3, progress=False, labels=labels)
    torch.testing.assert_close(batched, whole, atol=1e-5, rtol=0)


def released_quad(steps: int, num_timesteps: int = 1000) -> list:
    """ddpm_exp/runners/diffusion.py:503-509 (np.linspace(0, sqrt(0.8 T), steps) ** 2, truncated) in plain Python."""
    top = math.sqrt(num_timesteps * 0.8)  # np.linspace ends on the endpoint itself
    return [int((top * k / (steps - 1)) ** 2) if k < steps - 1 else int(top ** 2) for k in range(steps)]


@pytest.mark.parametrize("steps", [10, 50, 100, 250])
def test_quad_timesteps_are_the_released_sequence(steps):
    assert quad_timesteps(steps, 1000) == released_quad(steps)


def test_quad_timesteps_start_at_0_8_t_and_repeat_small_t():
    seq = quad_timesteps(100, 1000)
    assert seq[:10] == [0, 0, 0, 0, 1, 2, 2, 3, 5, 6] and seq[-3:] == [768, 783, 800]


def visited_timesteps(model, **kwargs) -> list:
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(int(args[1])))
    ddim_sample(model, n=1, seed=0, progress=False, **kwargs)
    handle.remove()
    return seen


def test_each_spacing_visits_its_timesteps(unet):
    assert visited_timesteps(unet, steps=10) == list(range(900, -1, -100)), "the scheduler's leading spacing"
    assert visited_timesteps(unet, steps=10, spacing="quad") == released_quad(10)[::-1]


def released_generalized_steps(unet, x, seq, eta, seed):
    """ddpm_exp/functions/denoising.py:4-32 (generalized_steps and compute_alpha) on the CPU, no clipping; its
    torch.randn_like(x) is drawn as ddim_sample draws the eta > 0 noise (a generator seeded with seed + 1)."""
    betas = noise_scheduler().betas
    alpha = (1 - torch.cat([torch.zeros(1), betas])).cumprod(dim=0)  # compute_alpha: alpha[t + 1]
    generator = torch.Generator().manual_seed(seed + 1)
    for i, j in zip(reversed(seq), reversed([-1] + list(seq[:-1]))):
        at, at_next = alpha[i + 1], alpha[j + 1]
        noise = torch.randn(x.shape, generator=generator) if eta > 0 else torch.zeros_like(x)
        et = unet(x, i).sample
        x0_t = (x - et * (1 - at).sqrt()) / at.sqrt()
        c1 = eta * ((1 - at / at_next) * (1 - at_next) / (1 - at)).sqrt()
        c2 = ((1 - at_next) - c1 ** 2).sqrt()
        x = at_next.sqrt() * x0_t + c1 * noise + c2 * et
    return x


@pytest.mark.parametrize("eta", [0.0, 1.0])
@torch.no_grad()
def test_quad_unclipped_sampling_is_the_released_generalized_steps(unet, eta):
    ours = ddim_sample(unet, n=2, seed=4, steps=10, eta=eta, spacing="quad", clip_sample=False, decode=False,
                       progress=False)
    released = released_generalized_steps(unet, initial_noise(4, 2, (1, 16, 16)), released_quad(10), eta, seed=4)
    torch.testing.assert_close(ours, released, rtol=1e-5, atol=1e-5)  # float32 sums in another order


@torch.no_grad()
def test_default_sampling_is_diffusers_ddim(unet):
    """The default path (uniform spacing, the scheduler's clip_sample) is diffusers' DDIMScheduler loop, bit for bit."""
    for clip_sample in (None, False):
        scheduler = DDIMScheduler.from_config(noise_scheduler().config,
                                              **({} if clip_sample is None else {"clip_sample": clip_sample}))
        scheduler.set_timesteps(5)
        x = initial_noise(2, 3, (1, 16, 16))
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
        kwargs = {} if clip_sample is None else {"clip_sample": clip_sample}
        assert torch.equal(ddim_sample(unet, n=3, seed=2, steps=5, decode=False, progress=False, **kwargs), x)


@torch.no_grad()
@pytest.mark.parametrize("spacing", ["uniform", "quad"])
def test_no_clip_differs_from_clip_where_x0_leaves_the_range(unet, spacing):
    x = initial_noise(0, 2, (1, 16, 16))
    a = noise_scheduler().alphas_cumprod[900]
    assert ((x - (1 - a).sqrt() * unet(x, 900).sample) / a.sqrt()).abs().max() > 1, "x_0 predictions leave [-1, 1]"
    sample = {"n": 2, "seed": 0, "steps": 10, "spacing": spacing, "decode": False, "progress": False}
    clipped, unclipped = ddim_sample(unet, clip_sample=True, **sample), ddim_sample(unet, clip_sample=False, **sample)
    assert not torch.allclose(clipped, unclipped, atol=1e-3)
    assert noise_scheduler().config.clip_sample and torch.equal(ddim_sample(unet, **sample), clipped), (
        "None: the scheduler config's clipping")


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(steps=0), dict(steps=1001), dict(eta=-1.0), dict(batch_size=0),
                                    dict(spacing="linear")])
def test_bad_sampling_arguments_are_input_errors(unet, kwargs):
    with pytest.raises(InputError):
        ddim_sample(unet, **{"n": 1, "seed": 0, "progress": False, **kwargs})
