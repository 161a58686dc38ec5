"""The paper's consistency metric (SSIM between same-seed samples, Section 5.1) and sampling latency.

SSIM (Wang et al., 2004) compares the sample of the dense model and the sample of the pruned model
drawn from the same x_T, pair by pair. It uses torchmetrics' gaussian window, whose width
torchmetrics derives from sigma (2 * int(3.5 sigma + 0.5) + 1): sigma = 1.5 gives the usual 11x11
window for images of 32 pixels or more; smaller images (the 16x16 digits) use sigma = 1.5 * 7 / 11,
a 7x7 window of the same shape, so that a window stays local on so small an image.
"""
import os
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


def relative_latencies(models: dict, reference, *, batch_size: int, steps: int = 100, repeats: int = 5) -> dict:
    """Sampling time of each of ``models`` (``{label: model}``) as a fraction of ``reference``'s, all timed in one
    alternation (:func:`timed_against`): one DDIM run of each model per round; per label, the fraction is the median
    of the rounds' ratios, with their range."""
    def one_run(m):
        return lambda: sampling_latency(m, batch_size=batch_size, steps=steps, repeats=1, warmup=0)["seconds_per_batch"]

    timed = timed_against(one_run(reference), {label: one_run(m) for label, m in models.items()}, repeats=repeats)
    return {label: {"fraction": t["ratio"], "fraction_low": t["ratio_low"], "fraction_high": t["ratio_high"],
                    "seconds": t["seconds"], "reference_seconds": t["reference_seconds"], "batch_size": batch_size,
                    "steps": steps, "repeats": repeats} for label, t in timed.items()}


def forward_speedups(dense, pruned: dict, *, batch_sizes: list, repeats: int = 3, tokens: int | None = None) -> list:
    """Measured against counted: for each pruned U-Net (``{label: unet}``) and batch size, its MACs as a fraction of
    ``dense``'s beside the time of one U-Net forward as a fraction of ``dense``'s, every pruned U-Net timed against
    ``dense`` in one alternation per batch size (:func:`timed_against`, median and range of the rounds' ratios)
    under ``torch.inference_mode``. Random weights do: the time does not depend on them. ``tokens``: encoder
    states of a text encoder's length (architectures)."""
    dense_macs = count_macs(dense, example_inputs(dense, tokens=tokens))["macs"]
    macs = {label: count_macs(unet, example_inputs(unet, tokens=tokens))["macs"] for label, unet in pruned.items()}
    timed = {}
    for batch_size in batch_sizes:
        inputs = example_inputs(dense, batch_size=batch_size, tokens=tokens)

        def forward(model):
            return seconds_of(lambda: model(**inputs))

        with torch.inference_mode():
            timed[batch_size] = timed_against(forward(dense), {label: forward(unet) for label, unet in pruned.items()},
                                              repeats=repeats)
    return [{"variant": label, "batch_size": batch_size, "macs_ratio": macs[label] / dense_macs,
             "time_ratio": t["ratio"], "time_ratio_low": t["ratio_low"], "time_ratio_high": t["ratio_high"],
             "seconds": t["seconds"], "dense_seconds": t["reference_seconds"], "repeats": repeats,
             "device": str(next(dense.parameters()).device), "torch_threads": torch.get_num_threads()}
            for label in pruned for batch_size in batch_sizes for t in [timed[batch_size][label]]]


def timed_against(reference, candidates: dict, *, repeats: int) -> dict:
    """Each candidate's time as a fraction of ``reference``'s, all timed in one alternation; each callable runs its
    work once and returns its seconds (:func:`seconds_of`).

    After a warm-up round, every round times each candidate in turn between two timings of the reference
    (R C1 ... Cn R C1 ... Cn R ...: the reference's last timing of a round is the first of the next). A candidate's
    ratio in a round is its time over the reference's, interpolated linearly between the two at the candidate's
    place in the round, so a steady drift of the machine's speed, common on shared CPUs, cancels out instead of
    landing on whichever was timed later. Per candidate: the median of the rounds' ratios with their range, and
    the median seconds of both. With n candidates a round takes n + 1 timings, not the 2n of n separate pairs.
    """
    if repeats < 1:
        raise InputError(f"a timing needs at least one repeat, got {repeats}")
    for work in (reference, *candidates.values()):  # the warm-up round
        work()
    before, rounds = reference(), []
    for _ in range(repeats):
        seconds = {label: work() for label, work in candidates.items()}
        after = reference()
        rounds.append((seconds, before, after))
        before = after
    places = {label: (place + 1) / (len(candidates) + 1) for place, label in enumerate(candidates)}
    timed = {}
    for label, place in places.items():
        ratios = [seconds[label] / (first + place * (last - first)) for seconds, first, last in rounds]
        timed[label] = {"ratio": statistics.median(ratios), "ratio_low": min(ratios), "ratio_high": max(ratios),
                        "seconds": statistics.median(seconds[label] for seconds, _, _ in rounds),
                        "reference_seconds": statistics.median(first for _, first, _ in rounds), "repeats": repeats}
    return timed


def alternated(first, second, *, repeats: int) -> dict:
    """:func:`timed_against` of one callable: ``first``'s time as a fraction of ``second``'s (S F S F ... S)."""
    return timed_against(second, {"first": first}, repeats=repeats)["first"]


def allocator() -> str:
    """How glibc's malloc treats large blocks in this process, in words: a CPU time depends on it. By default a
    freed block above the mmap threshold (at most 32 MB) goes back to the system and its pages fault in anew at
    the next use, a third of a forward of the LSUN U-Net on this project's CPU; ``tools/build_book.sh`` keeps
    them in the heap (``MALLOC_MMAP_THRESHOLD_``)."""
    threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if threshold:
        return (f"glibc's malloc keeping freed blocks below {int(threshold) / 2**30:g} GiB in the heap "
                "(MALLOC_MMAP_THRESHOLD_)")
    return "glibc's malloc at its defaults (freed blocks above at most 32 MB returned to the system)"


def seconds_of(work):
    """A callable that runs ``work()`` once and returns its wall time, waiting for a GPU to finish (for
    :func:`timed_against`)."""
    def timed() -> float:
        start = time.perf_counter()
        work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return timed
