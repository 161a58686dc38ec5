"""How an error in the noise prediction at step t travels to the image x_0 (Section 4, after Eq. 7).

The sampler is the DDPM reverse update of Eq. 3 over all T = 1000 steps, with the posterior
standard deviation sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t) and with every z_t fixed by the
seed, so that two runs differ only by the injected error:

    x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) * eps(x_t, t)) / sqrt(alpha_t) + sigma_t z_t

Steps are numbered as in the paper, t = 1..T; the U-Net is called with timestep t - 1 (diffusers'
0-based schedule). Replacing eps by eps + delta at step t moves x_{t-1} by
delta_{t-1} = beta_t / (sqrt(alpha_t) sqrt(1 - abar_t)) delta (the paper's step gain). If the network's
response to the moved input is ignored (the paper's "first term"), every later step s divides the
deviation by sqrt(alpha_s), so x_0 moves by beta_t / sqrt(abar_t (1 - abar_t)) delta: the first-order
prediction. :func:`propagate_errors` measures the real deviation, network response included.
"""
import pandas as pd
import torch

from .errors import InputError
from .pipeline import noise_scheduler
from .progress import bar
from .sampling import initial_noise


def schedule() -> dict:
    """beta_t, alpha_t, abar_t and abar_{t-1} (abar_0 = 1) as float64 tensors, entry t - 1 for step t."""
    scheduler = noise_scheduler()
    betas = scheduler.betas.double()
    abar = scheduler.alphas_cumprod.double()
    return {"beta": betas, "alpha": 1 - betas, "abar": abar, "abar_prev": torch.cat([torch.ones(1), abar[:-1]])}


def first_order_gains() -> pd.DataFrame:
    """For every step t: the step gain, the first-term amplification to x_0 and their product (module doc)."""
    s = schedule()
    step_gain = s["beta"] / (s["alpha"].sqrt() * (1 - s["abar"]).sqrt())
    chain_gain = 1 / s["abar_prev"].sqrt()  # prod_{s=1}^{t-1} 1 / sqrt(alpha_s)
    return pd.DataFrame({"t": range(1, len(step_gain) + 1), "step_gain": step_gain.numpy(),
                         "chain_gain": chain_gain.numpy(), "x0_gain": (step_gain * chain_gain).numpy()})


def reverse_step(x, epsilon, t: int, z, s: dict):
    """Eq. 3 at step t (1-based) with the noise z given; z is ignored at t = 1."""
    i = t - 1
    beta, alpha, abar, abar_prev = (float(s[k][i]) for k in ("beta", "alpha", "abar", "abar_prev"))
    mean = (x - beta / (1 - abar) ** 0.5 * epsilon) / alpha ** 0.5
    if t == 1:
        return mean
    sigma = (beta * (1 - abar_prev) / (1 - abar)) ** 0.5
    return mean + sigma * z


def rms(x) -> float:
    return float(x.double().pow(2).mean().sqrt())


@torch.no_grad()
def propagate_errors(model, *, timesteps, scales, n: int = 4, seed: int = 0, batch_size: int = 64,
                     progress: bool = True) -> pd.DataFrame:
    """Sample n images by Eq. 3 once clean and once per (t in ``timesteps``, scale in ``scales``) with
    eps(x_t, t) + delta injected at step t only; delta = scale * d with d a fixed direction of unit RMS.

    Returns one row per perturbed run and step s = t-1, ..., 0: the RMS deviation of x_s from the
    clean run over all n images and pixels (``deviation``) and the first-term prediction of it
    (``predicted`` = scale * step gain * prod_{r=s+1}^{t-1} 1/sqrt(alpha_r)). Runs share the clean
    trajectory until their step t, so each step evaluates the clean batch and the runs already injected.
    """
    s = schedule()
    T = len(s["beta"])
    timesteps = sorted({int(t) for t in timesteps})
    if not timesteps or timesteps[0] < 1 or timesteps[-1] > T or not scales or min(scales) <= 0 or n < 1:
        raise InputError(f"need steps t in 1..{T}, positive scales and n >= 1; got timesteps={timesteps}, "
                         f"scales={list(scales)}, n={n}")
    if getattr(model.config, "cross_attention_dim", None):
        raise InputError("error propagation needs an unconditional U-Net (UNet2DModel)")
    parameter = next(model.parameters())
    size = model.config.sample_size
    shape = (model.config.in_channels, *((size, size) if isinstance(size, int) else size))
    clean = initial_noise(seed, n, shape).double()
    z_stream = torch.Generator().manual_seed(seed + 1)
    direction = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed + 2)).double()
    direction /= rms(direction)
    perturbed = {}  # (t, scale) -> x of the run injected at step t, once it has left the clean trajectory
    rows = []
    model.eval()

    def eps(x, t):
        batches = x.split(batch_size)
        steps = torch.full((1,), t - 1, dtype=torch.long, device=parameter.device)
        return torch.cat([model(b.to(parameter.device, parameter.dtype), steps).sample.double().cpu() for b in batches])

    for t in bar(range(T, 0, -1), desc="Eq. 3 with injected errors", progress=progress):
        z = torch.randn((n, *shape), generator=z_stream).double()
        keys = list(perturbed)
        epsilon = eps(torch.cat([clean, *perturbed.values()]), t).split(n)
        for key, x, e in zip(keys, list(perturbed.values()), epsilon[1:]):
            perturbed[key] = reverse_step(x, e, t, z, s)
        if t in timesteps:
            for scale in scales:
                perturbed[(t, scale)] = reverse_step(clean, epsilon[0] + scale * direction, t, z, s)
        clean = reverse_step(clean, epsilon[0], t, z, s)
        for (t_injected, scale), x in perturbed.items():
            gain = s["beta"][t_injected - 1] / (s["alpha"][t_injected - 1] * (1 - s["abar"][t_injected - 1])).sqrt()
            chain = (s["abar_prev"][t - 1] / s["abar_prev"][t_injected - 1]).sqrt()  # prod_{r=t}^{t_inj-1} alpha_r^-1/2
            rows.append({"t": t_injected, "scale": scale, "s": t - 1, "deviation": rms(x - clean),
                         "predicted": float(scale * gain * chain)})
    return pd.DataFrame(rows)
