"""The paper's consistency metric (SSIM between same-seed samples, Section 5.1) and sampling latency.

SSIM (Wang et al., 2004) compares the sample of the dense model and the sample of the pruned model
drawn from the same x_T, pair by pair. It uses torchmetrics' gaussian window, whose width
torchmetrics derives from sigma (2 * int(3.5 sigma + 0.5) + 1): sigma = 1.5 gives the usual 11x11
window for images of 32 pixels or more; smaller images (the 16x16 digits) use sigma = 1.5 * 7 / 11,
a 7x7 window of the same shape, so that a window stays local on so small an image.
"""
import statistics
import time

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from .errors import InputError
from .pipeline import as_diffusion_model
from .sampling import ddim_sample


def ssim_sigma(image_size: int) -> float:
    """Gaussian sigma of the SSIM window: 11x11 (sigma 1.5) from 32 pixels up, 7x7 below."""
    return 1.5 if image_size >= 32 else 1.5 * 7 / 11


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of each pair (a[i], b[i]) of N x C x H x W images in [-1, 1]: a tensor of N values, 1 = identical."""
    if a.ndim != 4 or a.shape != b.shape:
        raise InputError(f"SSIM needs two N x C x H x W batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < 8:
        raise InputError(f"SSIM needs images of at least 8x8 pixels, got {tuple(a.shape[-2:])}")
    return structural_similarity_index_measure((a.float() + 1) / 2, (b.float() + 1) / 2, gaussian_kernel=True,
                                               sigma=ssim_sigma(min(a.shape[-2:])), data_range=1.0, reduction="none")


def mean_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """The paper's SSIM column: the mean over pairs of same-seed samples."""
    return ssim(a, b).mean().item()


def sampling_latency(model, *, batch_size: int, steps: int = 100, repeats: int = 3, warmup: int = 1) -> dict:
    """Median wall time of one DDIM sampling run of ``batch_size`` images (U-Net steps and decoding), on the model's
    device; ``model`` is a DiffusionModel or a bare U-Net."""
    if repeats < 1 or warmup < 0:
        raise InputError(f"latency needs at least one repeat and no negative warm-up, got {repeats} and {warmup}")
    seconds = []
    for run in range(warmup + repeats):
        start = time.perf_counter()
        ddim_sample(model, n=batch_size, seed=run, steps=steps, batch_size=batch_size, progress=False)
        seconds.append(time.perf_counter() - start)
    per_batch = statistics.median(seconds[warmup:])
    return {"seconds_per_batch": per_batch, "seconds_per_image": per_batch / batch_size, "batch_size": batch_size,
            "steps": steps, "repeats": repeats, "device": str(as_diffusion_model(model).device),
            "torch_threads": torch.get_num_threads()}


def relative_latency(model, reference, *, batch_size: int, steps: int = 100, repeats: int = 5) -> dict:
    """Sampling time of ``model`` as a fraction of ``reference``'s, timed in alternation (A B A B ...).

    Each round times one DDIM run of each model back to back (after one warm-up run of each); the
    fraction is the median over rounds of the two times' ratio, so a drift of the machine's speed,
    common on shared CPUs, cancels out instead of landing on whichever model was timed later.
    """
    if repeats < 1:
        raise InputError(f"latency needs at least one repeat, got {repeats}")
    rounds = [[sampling_latency(m, batch_size=batch_size, steps=steps, repeats=1, warmup=0)["seconds_per_batch"]
               for m in (model, reference)] for _ in range(repeats + 1)][1:]  # the first round warms both up
    return {"fraction": statistics.median(a / b for a, b in rounds),
            "seconds": statistics.median(a for a, _ in rounds),
            "reference_seconds": statistics.median(b for _, b in rounds),
            "batch_size": batch_size, "steps": steps, "repeats": repeats}
