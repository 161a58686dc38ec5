"""DDIM sampling as the paper evaluates it: 100 steps, eta = 0 (Section 5.1), from seeded noise.

x_T is a function of the seed alone (drawn on the CPU for all n samples at once), so a dense and
a pruned model given the same seed start from the same noise, whatever the batch size or device;
their samples can then be compared pair by pair (SSIM, Table 1). The conditioning (class labels,
prompts, or the model's default, see :mod:`pipeline`) is also fixed by the seed and the arguments.

The released code behind the paper's CIFAR-10 numbers (VainF/Diff-Pruning, ddpm_exp) samples with the
DDIM authors' settings, available here as options: quadratic timestep spacing (``spacing="quad"``) and
no clipping of the predicted x_0 (``clip_sample=False``).
"""
import numpy as np
import torch
from diffusers import DDIMScheduler

from .errors import InputError
from .pipeline import as_diffusion_model, rows_of, to_device
from .progress import bar

SPACINGS = ("uniform", "quad")


def initial_noise(seed: int, n: int, shape: tuple) -> torch.Tensor:
    """x_T ~ N(0, I) for n samples of ``shape`` (C, H, W), drawn on the CPU from ``seed`` alone."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def quad_timesteps(steps: int, num_train_timesteps: int) -> list:
    """The released evaluation's timesteps, skip_type quad (ddpm_exp/runners/diffusion.py:502-509):
    int(s^2) for ``steps`` values s evenly spaced in [0, sqrt(0.8 T)], increasing. Sampling starts at
    t = 0.8 T, and small t repeat (0, 0, 0, 0, 1, 2, 2, 3, ... for 100 steps of T = 1000)."""
    return [int(s) for s in np.linspace(0, np.sqrt(num_train_timesteps * 0.8), steps) ** 2]


def generalized_step(alphas_cumprod: torch.Tensor, epsilon, t: int, t_next: int, x, *, eta: float, noise,
                     clip_range: float | None):
    """x_{t_next} from x_t, as the released generalized_steps (ddpm_exp/functions/denoising.py:4-7, 22-29):
    DDIM (Song et al., Eq. 12) with sigma = eta sqrt((1 - a_next) / (1 - a_t) (1 - a_t / a_next)), a_-1 = 1,
    and x_0 clipped to [-clip_range, clip_range] unless ``clip_range`` is None. A repeated t is a step to itself."""
    alpha = torch.cat([torch.ones(1), alphas_cumprod])  # alpha[t + 1] = a_t, alpha[0] = 1 (t = -1)
    at, at_next = alpha[t + 1], alpha[t_next + 1]
    x0 = (x - epsilon * (1 - at).sqrt()) / at.sqrt()
    if clip_range is not None:
        x0 = x0.clamp(-clip_range, clip_range)
    c1 = eta * ((1 - at / at_next) * (1 - at_next) / (1 - at)).sqrt()
    c2 = ((1 - at_next) - c1 ** 2).sqrt()
    x_next = at_next.sqrt() * x0 + c2 * epsilon
    return x_next if noise is None else x_next + c1 * noise


@torch.no_grad()
def ddim_sample(model, *, n: int, seed: int, steps: int = 100, eta: float = 0.0, batch_size: int = 64,
                progress: bool = True, labels=None, prompts=None, guidance_scale: float = 1.0,
                decode: bool = True, clip_sample: bool | None = None, spacing: str = "uniform") -> torch.Tensor:
    """n samples of an epsilon-prediction model by DDIM (Song et al., Eq. 12), on the CPU.

    ``model`` is a :class:`pipeline.DiffusionModel` (or a bare U-Net: a pixel model). Returns decoded
    images in [-1, 1], or with ``decode=False`` the U-Net's own samples (latents of a latent model:
    LD-Pruner scores those). ``labels`` / ``prompts`` condition the samples (default: the model's,
    see ``DiffusionModel.conditions``); ``guidance_scale`` s != 1 is classifier-free guidance,
    eps_uncond + s (eps_cond - eps_uncond), with the empty prompt as the unconditional input. Each
    step updates every batch in turn, so the noise drawn for eta > 0 is also a function of the seed
    alone and the samples do not depend on ``batch_size``.

    ``clip_sample`` clips (True) or not (False) each step's predicted x_0 to the scheduler's range (None: as
    the model's scheduler config says). ``spacing`` "uniform" takes the scheduler's timesteps (for the
    DDPM schedules, t = 0, 10, ..., 990 at 100 steps: the released skip_type uniform,
    ddpm_exp/runners/diffusion.py:499-501) and diffusers' DDIM step; "quad" takes :func:`quad_timesteps`
    with the released code's step (:func:`generalized_step`), which diffusers has no spacing for.
    """
    if n < 1 or batch_size < 1:
        raise InputError(f"need at least one image and a batch size of at least 1, got n={n}, batch_size={batch_size}")
    if not 1 <= steps <= 1000 or eta < 0:
        raise InputError(f"DDIM needs 1 to 1000 steps and eta >= 0, got steps={steps}, eta={eta}")
    if spacing not in SPACINGS:
        raise InputError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    model = as_diffusion_model(model)
    conditions, _ = model.conditions(n, labels=labels, prompts=prompts, seed=seed)
    unconditional = model.null_conditions(n) if guidance_scale != 1 else None
    scheduler = DDIMScheduler.from_config(model.schedule.config,
                                          **({} if clip_sample is None else {"clip_sample": clip_sample}))
    scheduler.set_timesteps(steps)
    if spacing == "uniform":
        schedule = [(t, None) for t in scheduler.timesteps]
    else:
        seq = quad_timesteps(steps, scheduler.config.num_train_timesteps)
        schedule = list(zip(reversed(seq), reversed([-1, *seq[:-1]])))  # (t, t_next), as generalized_steps
    clip_range = scheduler.config.clip_sample_range if scheduler.config.clip_sample else None
    samples = initial_noise(seed, n, model.latent_shape)
    generator = torch.Generator().manual_seed(seed + 1)  # the eta > 0 noise: a stream of its own, fixed by the seed
    unet, device = model.unet, model.device
    dtype = next(unet.parameters()).dtype
    batches = [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    was_training = unet.training
    unet.eval()
    try:
        for t, t_next in bar(schedule, desc=f"DDIM ({n} samples)", progress=progress):
            variance_noise = torch.randn(samples.shape, generator=generator) if eta > 0 else None
            for rows in batches:
                x = samples[rows].to(device, dtype)
                epsilon = unet(x, t, **to_device(rows_of(conditions, n, rows), device)).sample
                if unconditional is not None:
                    uncond = unet(x, t, **to_device(rows_of(unconditional, n, rows), device)).sample
                    epsilon = uncond + guidance_scale * (epsilon - uncond)
                noise = None if variance_noise is None else variance_noise[rows].to(x.device, x.dtype)
                if t_next is None:
                    x = scheduler.step(epsilon, t, x, eta=eta, variance_noise=noise).prev_sample
                else:
                    x = generalized_step(scheduler.alphas_cumprod, epsilon, t, t_next, x, eta=eta, noise=noise,
                                         clip_range=clip_range)
                samples[rows] = x.float().cpu()
    finally:
        unet.train(was_training)
    if not torch.isfinite(samples).all():
        raise InputError("DDIM produced non-finite samples: the U-Net's output is not finite at some step (a UNet2DModel "
                         "with a Fourier time embedding takes log t, -inf at t = 0: a continuous-time score model)")
    return model.decode(samples) if decode else samples
