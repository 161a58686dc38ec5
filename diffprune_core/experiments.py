"""One row of the paper's tables on the embedded default: teacher -> prune -> fine-tune -> sample -> measure.

A :class:`RunSpec` says how a model is obtained (the teacher itself, a pruning criterion, LD-Pruner's
operator pruning, or scratch training of a pruned architecture), how long it trains, and how it is
sampled. :func:`run` does it once and stores the model, the samples and ``metrics.json`` under
``results/runs/<key>/``; the notebooks of Tables 1, 4 and 5 share runs (Diff-Pruning at T = 0.05
and ratio 0.3 is in all three). The gradient sums of Algorithm 1 are shared more widely still, by
every run with the same teacher, batch and T (:func:`gradient_sums`).
SSIM compares each model's samples with the teacher's from the same seed, hence the same x_T.
"""
import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torchvision.utils import save_image

from .architectures import DATA_DIR, example_inputs
from .checkpoints import load_unet
from .complexity import count_macs
from .criteria import CRITERIA, GRADIENT_CRITERIA, GradientReport, StructureImportance, accumulate_gradients
from .data import load_images
from .digits_classifier import classify_samples
from .errors import InputError
from .fid import fid
from .fileio import atomic_dir, write_json
from .ldpruner import ld_prune
from .metrics import mean_ssim, sampling_latency, ssim
from .pruner import prune, prune_unet
from .pipeline import noise_scheduler
from .sampling import ddim_sample
from .training import TrainConfig, reinitialise, train

RUNS_DIR = DATA_DIR.parent / "results" / "runs"
LD_PRUNER_METHODS = ("ld-pruner", "ld-pruner-scratch")
METHODS = ("teacher", "scratch", *CRITERIA, *LD_PRUNER_METHODS)
LD_SCORES = "ld_scores.csv"  # an LD-Pruner run's operator ranking, beside metrics.json


@dataclass(kw_only=True, frozen=True)
class RunSpec:
    """Everything that determines a run's numbers (and so its cache key)."""
    teacher: str = str(DATA_DIR / "teacher")  # the dense model to prune
    method: str = "diff-pruning"  # "teacher", "scratch" (random init of the pruned shape), a criterion, or
    # "ld-pruner" / "ld-pruner-scratch" (operator pruning; random init of its architecture)
    ratio: float | None = 0.3  # channel pruning ratio ...
    macs_reduction: float | None = None  # ... or the fraction of MACs to remove (Table 4; LD-Pruner's only target)
    threshold: float = 0.05  # Diff-Pruning's T
    max_timesteps: int | None = None  # cap on the timesteps used (Figure 5)
    data: str = "digits"  # training images and the batch of Algorithm 1
    prune_batch: int = 64  # images in Algorithm 1's one batch
    train_steps: int = 600  # fine-tuning (or scratch training) steps; 0 = none
    n_samples: int = 500  # samples for FID and SSIM
    sample_steps: int = 100  # DDIM steps (eta 0)
    seed: int = 0
    n_gen: int = 16  # LD-Pruner: samples per scoring set, N_gen
    score_steps: int = 20  # LD-Pruner: DDIM steps of each scoring set

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.method in LD_PRUNER_METHODS and self.macs_reduction is None:
            raise InputError(f"{self.method} runs need macs_reduction, e.g. what a channel-pruning run achieved")
        if self.train_steps < 0 or self.n_samples < 2:
            raise InputError("train_steps must be >= 0 and n_samples >= 2")


def settings_digest(settings: dict, teacher: str) -> str:
    """SHA-256 of ``settings`` (JSON) and of the teacher's weight files."""
    folder = Path(teacher)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_key(spec: RunSpec) -> str:
    """A readable folder name plus a hash of every setting and of the teacher's weights.

    A teacher run is keyed as :func:`teacher_spec` of itself: its pruning and training settings are unused.
    """
    if spec.method == "teacher":
        spec = teacher_spec(spec)
    amount = f"m{spec.macs_reduction}" if spec.macs_reduction is not None else f"r{spec.ratio}"
    label = "teacher" if spec.method == "teacher" else f"{spec.method}-{amount}-s{spec.train_steps}"
    return f"{label}-{settings_digest(asdict(spec), spec.teacher)[:10]}"


def teacher_spec(spec: RunSpec) -> RunSpec:
    """The teacher's own run with the same sampling settings: the reference for SSIM."""
    return replace(spec, method="teacher", ratio=None, macs_reduction=None, threshold=0.0, max_timesteps=None,
                   train_steps=0)


def run(spec: RunSpec, *, root=RUNS_DIR, progress: bool = True) -> dict:
    """The run's metrics, computed once and then read back from ``root/<run_key>/metrics.json``."""
    out = Path(root) / run_key(spec)
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    reference = None if spec.method == "teacher" else load_samples(teacher_spec(spec), root, progress)
    start = time.perf_counter()
    model = load_unet(spec.teacher)
    size, channels = model.config.sample_size, model.config.in_channels
    images = load_images(spec.data, image_size=size, channels=channels)
    with atomic_dir(out) as tmp:
        pruning = {}
        if spec.method in LD_PRUNER_METHODS:
            pruning = ld_prune(model, macs_reduction=spec.macs_reduction, n_gen=spec.n_gen,
                               sample_steps=spec.score_steps, seed=spec.seed, progress=progress)
            pruning.pop("scores").to_csv(tmp / LD_SCORES, index=False)
        elif spec.method != "teacher":
            criterion = "magnitude" if spec.method == "scratch" else spec.method
            batch = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(spec.seed))[:spec.prune_batch]]
            gradients = gradient_sums(model, batch, spec, root, progress) if criterion in GRADIENT_CRITERIA else None
            pruning = prune(model, criterion, ratio=None if spec.macs_reduction else spec.ratio,
                            macs_reduction=spec.macs_reduction, images=batch,
                            alphas_cumprod=noise_scheduler().alphas_cumprod, threshold=spec.threshold,
                            max_steps=spec.max_timesteps, seed=spec.seed, progress=progress, gradients=gradients)
        if spec.method in ("scratch", "ld-pruner-scratch"):
            reinitialise(model, spec.seed)
        if spec.train_steps and spec.method != "teacher":
            train(model, images, TrainConfig.cpu(steps=spec.train_steps, seed=spec.seed), tmp / "train",
                  resume=False, progress=progress)
        samples = ddim_sample(model, n=spec.n_samples, seed=spec.seed, steps=spec.sample_steps, progress=progress)
        metrics = measure(model, samples, reference, images, spec)
        metrics.update(method=spec.method, ratio=pruning.get("ratio"), threshold=pruning.get("threshold"),
                       timesteps_used=len(pruning.get("timesteps_used", [])),
                       operators_modified=len(pruning.get("modifications", [])), train_steps=spec.train_steps,
                       wall_time_s=round(time.perf_counter() - start, 1), spec=asdict(spec))
        save_samples(samples, tmp)
        write_json(tmp / "metrics.json", metrics)
    return metrics


def gradient_sums(model, batch, spec: RunSpec, root=RUNS_DIR, progress: bool = True) -> GradientReport:
    """Algorithm 1's gradient sums for ``spec``'s teacher, batch and T, put into ``model``'s ``param.grad``.

    They do not depend on the ratio, the MACs target or the fine-tuning, and Taylor and Diff-Pruning at
    T = 0 sum the same gradients, so they are computed once and read back from
    ``root/gradients/<key>/`` (safetensors plus JSON) by every run that needs them.
    """
    threshold = spec.threshold if spec.method == "diff-pruning" else 0.0
    settings = {"data": spec.data, "prune_batch": spec.prune_batch, "seed": spec.seed, "threshold": threshold,
                "max_timesteps": spec.max_timesteps}
    out = Path(root) / "gradients" / f"T{threshold:g}-{settings_digest(settings, spec.teacher)[:10]}"
    if not (out / "report.json").is_file():
        report = accumulate_gradients(model, batch, noise_scheduler().alphas_cumprod, threshold=threshold,
                                      max_steps=spec.max_timesteps, seed=spec.seed, progress=progress)
        with atomic_dir(out) as tmp:
            save_file({name: p.grad.contiguous() for name, p in model.named_parameters() if p.grad is not None},
                      tmp / "gradients.safetensors")
            write_json(tmp / "report.json", {**asdict(report), "losses": list(report.losses.items())})
        return report
    sums = load_file(out / "gradients.safetensors")
    for name, parameter in model.named_parameters():
        parameter.grad = sums.get(name)
    saved = json.loads((out / "report.json").read_text())
    return GradientReport(**{**saved, "losses": {int(t): loss for t, loss in saved["losses"]}})


def measure(model, samples, reference, images, spec: RunSpec) -> dict:
    """Params, MACs, CPU sampling latency, FID (digits features), SSIM to the teacher, confident digits."""
    complexity = count_macs(model, example_inputs(model))
    latency = sampling_latency(model, batch_size=min(64, spec.n_samples), steps=spec.sample_steps, repeats=1)
    score = fid(samples, images, reference_name=f"{spec.data}-all")
    metrics = {**complexity, "seconds_per_image": latency["seconds_per_image"],
               "fid": score["value"], "fid_label": score["label"],
               "ssim": 1.0 if reference is None else mean_ssim(samples, reference)}
    if model.config.in_channels == 1 and spec.data == "digits":
        metrics["confident_rate"] = classify_samples(samples)["confident_rate"]
    return metrics


def save_samples(samples: torch.Tensor, folder: Path) -> None:
    pixels = ((samples + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).contiguous()
    save_file({"samples": pixels}, folder / "samples.safetensors")
    save_image((samples[:64] + 1) / 2, folder / "grid.png", nrow=8, padding=1)


def load_samples(spec: RunSpec, root=RUNS_DIR, progress: bool = True) -> torch.Tensor:
    """A run's samples in [-1, 1] (running it first if needed)."""
    run(spec, root=root, progress=progress)
    pixels = load_file(Path(root) / run_key(spec) / "samples.safetensors")["samples"]
    return pixels.float() / 127.5 - 1


def table(specs: list, *, root=RUNS_DIR, progress: bool = True) -> pd.DataFrame:
    """One row of metrics per spec, in order."""
    return pd.DataFrame([run(spec, root=root, progress=progress) for spec in specs]).drop(columns="spec")


def ssim_versus_timesteps(spec: RunSpec, counts: list, *, root=RUNS_DIR, progress: bool = True) -> pd.DataFrame:
    """Figure 5: SSIM to the teacher of models pruned with the first k timesteps, k in ``counts``, no fine-tuning.

    One pass of Algorithm 1 with T = 0 over max(counts) timesteps; at each k the model with the
    gradients summed so far is copied, pruned with the Diff-Pruning score and sampled from the
    teacher's noise.
    """
    reference = load_samples(teacher_spec(spec), root, progress)
    model = load_unet(spec.teacher)
    images = load_images(spec.data, image_size=model.config.sample_size, channels=model.config.in_channels)
    batch = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(spec.seed))[:spec.prune_batch]]
    inputs = example_inputs(model)
    rows = []

    def snapshot(report):
        k = len(report.timesteps_used)
        if k in counts:
            pruned = copy.deepcopy(model)  # deepcopy leaves .grad behind: carry the sums so far over
            for source, target in zip(model.parameters(), pruned.parameters()):
                target.grad = None if source.grad is None else source.grad.clone()
            prune_unet(pruned, StructureImportance("diff-pruning"), ratio=spec.ratio, inputs=inputs)
            samples = ddim_sample(pruned, n=spec.n_samples, seed=spec.seed, steps=spec.sample_steps, progress=False)
            rows.append({"timesteps": k, "ssim": mean_ssim(samples, reference),
                         "ssim_std": ssim(samples, reference).std().item()})

    accumulate_gradients(model, batch, noise_scheduler().alphas_cumprod, threshold=0.0, max_steps=max(counts),
                         seed=spec.seed, progress=progress, on_step=snapshot)
    return pd.DataFrame(rows)
