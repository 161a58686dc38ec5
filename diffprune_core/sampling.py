"""DDIM sampling as the paper evaluates it: 100 steps, eta = 0 (Section 5.1), from seeded noise.

x_T is a function of the seed alone (drawn on the CPU for all n samples at once), so a dense and
a pruned model given the same seed start from the same noise, whatever the batch size or device;
their samples can then be compared pair by pair (SSIM, Table 1). The conditioning (class labels,
prompts, or the model's default, see :mod:`pipeline`) is also fixed by the seed and the arguments.
"""
import torch
from diffusers import DDIMScheduler
from tqdm.auto import tqdm

from .errors import InputError
from .pipeline import as_diffusion_model, rows_of, to_device



def initial_noise(seed: int, n: int, shape: tuple) -> torch.Tensor:
    """x_T ~ N(0, I) for n samples of ``shape`` (C, H, W), drawn on the CPU from ``seed`` alone."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def ddim_sample(model, *, n: int, seed: int, steps: int = 100, eta: float = 0.0, batch_size: int = 64,
                progress: bool = True, labels=None, prompts=None, guidance_scale: float = 1.0,
                decode: bool = True) -> torch.Tensor:
    """n samples of an epsilon-prediction model by DDIM (Song et al., Eq. 12), on the CPU.

    ``model`` is a :class:`pipeline.DiffusionModel` (or a bare U-Net: a pixel model). Returns decoded
    images in [-1, 1], or with ``decode=False`` the U-Net's own samples (latents of a latent model:
    LD-Pruner scores those). ``labels`` / ``prompts`` condition the samples (default: the model's,
    see ``DiffusionModel.conditions``); ``guidance_scale`` s != 1 is classifier-free guidance,
    eps_uncond + s (eps_cond - eps_uncond), with the empty prompt as the unconditional input. Each
    step updates every batch in turn, so the noise drawn for eta > 0 is also a function of the seed
    alone and the samples do not depend on ``batch_size``.
    """
    if n < 1 or batch_size < 1:
        raise InputError(f"need at least one image and a batch size of at least 1, got n={n}, batch_size={batch_size}")
    if not 1 <= steps <= 1000 or eta < 0:
        raise InputError(f"DDIM needs 1 to 1000 steps and eta >= 0, got steps={steps}, eta={eta}")
    model = as_diffusion_model(model)
    conditions, _ = model.conditions(n, labels=labels, prompts=prompts, seed=seed)
    unconditional = model.null_conditions(n) if guidance_scale != 1 else None
    scheduler = DDIMScheduler.from_config(model.schedule.config)
    scheduler.set_timesteps(steps)
    samples = initial_noise(seed, n, model.latent_shape)
    generator = torch.Generator().manual_seed(seed + 1)  # the eta > 0 noise: a stream of its own, fixed by the seed
    unet, device = model.unet, model.device
    dtype = next(unet.parameters()).dtype
    batches = [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    was_training = unet.training
    unet.eval()
    try:
        for t in tqdm(scheduler.timesteps, desc=f"DDIM ({n} samples)", disable=not progress):
            variance_noise = torch.randn(samples.shape, generator=generator) if eta > 0 else None
            for rows in batches:
                x = samples[rows].to(device, dtype)
                epsilon = unet(x, t, **to_device(rows_of(conditions, n, rows), device)).sample
                if unconditional is not None:
                    uncond = unet(x, t, **to_device(rows_of(unconditional, n, rows), device)).sample
                    epsilon = uncond + guidance_scale * (epsilon - uncond)
                noise = None if variance_noise is None else variance_noise[rows].to(x.device, x.dtype)
                samples[rows] = scheduler.step(epsilon, t, x, eta=eta, variance_noise=noise).prev_sample.float().cpu()
    finally:
        unet.train(was_training)
    if not torch.isfinite(samples).all():
        raise InputError("DDIM produced non-finite samples: the U-Net's output is not finite at some step (a UNet2DModel "
                         "with a Fourier time embedding takes log t, -inf at t = 0: a continuous-time score model)")
    return model.decode(samples) if decode else samples
