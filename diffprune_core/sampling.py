"""DDIM sampling as the paper evaluates it: 100 steps, eta = 0 (Section 5.1), from seeded noise.

x_T is a function of the seed alone (drawn on the CPU for all n images at once), so a dense and
a pruned model given the same seed start from the same noise, whatever the batch size or device;
their samples can then be compared pair by pair (SSIM, Table 1).
"""
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from .errors import InputError


def noise_scheduler() -> DDPMScheduler:
    """The 1000-step linear schedule beta_t in [1e-4, 0.02] (Ho et al.), the one source of alphas_cumprod."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def initial_noise(seed: int, n: int, shape: tuple) -> torch.Tensor:
    """x_T ~ N(0, I) for n images of ``shape`` (C, H, W), drawn on the CPU from ``seed`` alone."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def per_batch(value, n: int, rows: slice):
    """The batch's rows of a per-sample tensor (leading dimension n); any other value as it is."""
    return value[rows] if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n else value


@torch.no_grad()
def ddim_sample(model, *, n: int, seed: int, steps: int = 100, eta: float = 0.0, batch_size: int = 64,
                progress: bool = True, model_kwargs: dict | None = None) -> torch.Tensor:
    """n samples of an epsilon-prediction U-Net by DDIM (Song et al., Eq. 12), clamped to [-1, 1], on the CPU.

    Each step updates every batch in turn, so the noise drawn for eta > 0 is also a function of the
    seed alone and the samples do not depend on ``batch_size``. Tensors in ``model_kwargs`` whose
    leading dimension is n (class labels, text states) are split per batch; other values go to
    every call unchanged.
    """
    if n < 1 or batch_size < 1:
        raise InputError(f"need at least one image and a batch size of at least 1, got n={n}, batch_size={batch_size}")
    if not 1 <= steps <= 1000 or eta < 0:
        raise InputError(f"DDIM needs 1 to 1000 steps and eta >= 0, got steps={steps}, eta={eta}")
    scheduler = DDIMScheduler.from_config(noise_scheduler().config)
    scheduler.set_timesteps(steps)
    size = model.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    samples = initial_noise(seed, n, (model.config.in_channels, *size))
    generator = torch.Generator().manual_seed(seed + 1)  # the eta > 0 noise: a stream of its own, fixed by the seed
    parameter = next(model.parameters())
    batches = [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    was_training = model.training
    model.eval()
    try:
        for t in tqdm(scheduler.timesteps, desc=f"DDIM ({n} images)", disable=not progress):
            variance_noise = torch.randn(samples.shape, generator=generator) if eta > 0 else None
            for rows in batches:
                x = samples[rows].to(parameter.device, parameter.dtype)
                kwargs = {key: per_batch(value, n, rows) for key, value in (model_kwargs or {}).items()}
                epsilon = model(x, t, **kwargs).sample
                noise = None if variance_noise is None else variance_noise[rows].to(x.device, x.dtype)
                samples[rows] = scheduler.step(epsilon, t, x, eta=eta, variance_noise=noise).prev_sample.float().cpu()
    finally:
        model.train(was_training)
    return samples.clamp(-1, 1)
