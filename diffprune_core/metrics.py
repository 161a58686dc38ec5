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

from .architectures import example_inputs
from .complexity import count_macs
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
    """Sampling time of ``model`` as a fraction of ``reference``'s, timed in alternation (:func:`alternated`):
    one DDIM run of each model per round; the fraction is the median of the rounds' ratios, with their range."""
    def one_run(m):
        return lambda: sampling_latency(m, batch_size=batch_size, steps=steps, repeats=1, warmup=0)["seconds_per_batch"]

    timed = alternated(one_run(model), one_run(reference), repeats=repeats)
    return {"fraction": timed["ratio"], "fraction_low": timed["ratio_low"], "fraction_high": timed["ratio_high"],
            "seconds": timed["seconds"], "reference_seconds": timed["reference_seconds"],
            "batch_size": batch_size, "steps": steps, "repeats": repeats}


def forward_speedups(dense, pruned: dict, *, batch_sizes: list, repeats: int = 3, tokens: int | None = None) -> list:
    """Measured against counted: for each pruned U-Net (``{label: unet}``) and batch size, its MACs as a fraction of
    ``dense``'s beside the time of one U-Net forward as a fraction of ``dense``'s, timed in alternation
    (:func:`alternated`, median and range of the rounds' ratios) under ``torch.inference_mode``. Random weights
    do: the time does not depend on them. ``tokens``: encoder states of a text encoder's length (architectures)."""
    dense_macs = count_macs(dense, example_inputs(dense, tokens=tokens))["macs"]
    rows = []
    for label, unet in pruned.items():
        macs = count_macs(unet, example_inputs(unet, tokens=tokens))["macs"]
        for batch_size in batch_sizes:
            inputs = example_inputs(dense, batch_size=batch_size, tokens=tokens)

            def forward(model):
                return seconds_of(lambda: model(**inputs))

            with torch.inference_mode():
                timed = alternated(forward(unet), forward(dense), repeats=repeats)
            rows.append({"variant": label, "batch_size": batch_size, "macs_ratio": macs / dense_macs,
                         "time_ratio": timed["ratio"], "time_ratio_low": timed["ratio_low"],
                         "time_ratio_high": timed["ratio_high"], "seconds": timed["seconds"],
                         "dense_seconds": timed["reference_seconds"], "repeats": repeats,
                         "device": str(next(dense.parameters()).device), "torch_threads": torch.get_num_threads()})
    return rows


def alternated(first, second, *, repeats: int) -> dict:
    """Two timings taken in alternation, A B A B ..., after one warm-up round; each callable runs its work once and
    returns its seconds (:func:`seconds_of`). The ratio first / second is the median over rounds of the round's
    ratio, with its range, so a drift of the machine's speed, common on shared CPUs, cancels out instead of
    landing on whichever side was timed later; the seconds are medians too."""
    if repeats < 1:
        raise InputError(f"a timing needs at least one repeat, got {repeats}")
    rounds = [(first(), second()) for _ in range(repeats + 1)][1:]
    ratios = [a / b for a, b in rounds]
    return {"ratio": statistics.median(ratios), "ratio_low": min(ratios), "ratio_high": max(ratios),
            "seconds": statistics.median(a for a, _ in rounds),
            "reference_seconds": statistics.median(b for _, b in rounds),
            "repeats": repeats}


def seconds_of(work):
    """A callable that runs ``work()`` once and returns its wall time, waiting for a GPU to finish (for
    :func:`alternated`)."""
    def timed() -> float:
        start = time.perf_counter()
        work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return timed
