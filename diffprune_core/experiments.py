"""One row of the paper's tables on the embedded default: teacher -> prune -> fine-tune -> sample -> measure.

A :class:`RunSpec` says how a model is obtained (the teacher itself, a pruning criterion, LD-Pruner's
operator pruning, or scratch training of a pruned architecture), how long it trains, and how it is
sampled. :func:`run` does it once and stores the model, the samples and ``metrics.json`` under
``results/runs/<key>/``; the notebooks of Tables 1, 4 and 5 share runs (Diff-Pruning at T = 0.05
and ratio 0.3 is in all three). The gradient sums of Algorithm 1 are shared more widely still, by
every run with the same teacher, batch and T (:func:`gradient_sums`).
SSIM compares each model's samples with the teacher's from the same seed, hence the same x_T.

The teacher is any model :func:`checkpoints.load_model` reads: the pixel digits teacher, or the latent
miniature (data/latent_teacher, a class-conditional LDM). A class-conditional model is sampled with
the classes in turn (0, 1, ..., 9, 0, ...; :func:`sample_labels`), fine-tuned on the data's labels,
and its class accuracy measured; Algorithm 1's batch carries its images' labels.
"""
import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torchvision.utils import save_image

from .architectures import DATA_DIR, example_inputs
from .checkpoints import load_model
from .complexity import count_macs
from .criteria import CRITERIA, GRADIENT_CRITERIA, GradientReport, StructureImportance, accumulate_gradients
from .data import load_examples
from .digits_classifier import classify_samples
from .errors import InputError
from .fid import fid
from .fileio import atomic_dir, write_json
from .ldpruner import ld_prune, prune_by_scores
from .intervals import mean_interval, proportion_interval
from .metrics import mean_ssim, relative_latency, sampling_latency, ssim
from .pruner import prune, prune_unet
from .pipeline import as_diffusion_model
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
    for path in sorted(folder.rglob("*.safetensors")) if folder.is_dir() else []:  # a pipeline's in its folders
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
    model, examples = load_teacher(spec)
    labels, _ = model.data_conditions(examples)
    with atomic_dir(out) as tmp:
        pruning = {}
        if spec.method in LD_PRUNER_METHODS:
            pruning = ld_prune(model, macs_reduction=spec.macs_reduction, n_gen=spec.n_gen,
                               sample_steps=spec.score_steps, seed=spec.seed, progress=progress)
            pruning.pop("scores").to_csv(tmp / LD_SCORES, index=False)
        elif spec.method != "teacher":
            criterion = "magnitude" if spec.method == "scratch" else spec.method
            batch = algorithm1_examples(examples, spec)
            batch_labels, _ = model.data_conditions(batch)
            gradients = (gradient_sums(model, batch.images, spec, root, progress, labels=batch_labels)
                         if criterion in GRADIENT_CRITERIA else None)
            pruning = prune(model, criterion, ratio=None if spec.macs_reduction else spec.ratio,
                            macs_reduction=spec.macs_reduction, images=batch.images, labels=batch_labels,
                            threshold=spec.threshold, max_steps=spec.max_timesteps, seed=spec.seed,
                            progress=progress, gradients=gradients)
        if spec.method in ("scratch", "ld-pruner-scratch"):
            for module in (model.unet, model.class_embedder):  # what trains starts anew (the autoencoder stays)
                if module is not None:
                    reinitialise(module, spec.seed)
        if spec.train_steps and spec.method != "teacher":
            train(model, examples.images, TrainConfig.cpu(steps=spec.train_steps, seed=spec.seed), tmp / "train",
                  resume=False, progress=progress, labels=labels)
        requested = sample_labels(model, spec.n_samples)
        samples = ddim_sample(model, n=spec.n_samples, seed=spec.seed, steps=spec.sample_steps, labels=requested,
                              progress=progress)
        metrics = measure(model, samples, reference, examples.images, spec, labels=requested)
        metrics.update(method=spec.method, ratio=pruning.get("ratio"), threshold=pruning.get("threshold"),
                       timesteps_used=len(pruning.get("timesteps_used", [])),
                       operators_modified=len(pruning.get("modifications", [])), train_steps=spec.train_steps,
                       wall_time_s=round(time.perf_counter() - start, 1), spec=asdict(spec))
        save_samples(samples, tmp)
        write_json(tmp / "metrics.json", metrics)
    return metrics


def load_teacher(spec: RunSpec):
    """The teacher (a DiffusionModel) and its data (data.Examples, at the model's image size and channels)."""
    model = load_model(spec.teacher)
    channels, size, _ = model.image_shape
    return model, load_examples(spec.data, image_size=size, channels=channels)


def algorithm1_examples(examples, spec: RunSpec):
    """Algorithm 1's one batch: ``spec.prune_batch`` examples drawn by the seed."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(spec.seed))
    return examples.subset(order[:spec.prune_batch])


def sample_labels(model, n: int):
    """The classes of a class-conditional model's n samples, in turn (None for other models)."""
    kind, classes = model.class_labels()
    return torch.arange(n) % classes if kind == "labels" else None


def gradient_sums(model, batch, spec: RunSpec, root=RUNS_DIR, progress: bool = True, *, labels=None) -> GradientReport:
    """Algorithm 1's gradient sums for ``spec``'s teacher, batch and T, put into ``model``'s ``param.grad``.

    They do not depend on the ratio, the MACs target or the fine-tuning, and Taylor and Diff-Pruning at
    T = 0 sum the same gradients, so they are computed once and read back from
    ``root/gradients/<key>/`` (safetensors plus JSON) by every run that needs them.
    """
    threshold = spec.threshold if spec.method == "diff-pruning" else 0.0
    settings = {"data": spec.data, "prune_batch": spec.prune_batch, "seed": spec.seed, "threshold": threshold,
                "max_timesteps": spec.max_timesteps}
    out = Path(root) / "gradients" / f"T{threshold:g}-{settings_digest(settings, spec.teacher)[:10]}"
    unet = as_diffusion_model(model).unet
    if not (out / "report.json").is_file():
        report = accumulate_gradients(model, batch, threshold=threshold, max_steps=spec.max_timesteps,
                                      seed=spec.seed, progress=progress, labels=labels)
        with atomic_dir(out) as tmp:
            save_file({name: p.grad.contiguous() for name, p in unet.named_parameters() if p.grad is not None},
                      tmp / "gradients.safetensors")
            write_json(tmp / "report.json", {**asdict(report), "losses": list(report.losses.items())})
        return report
    sums = load_file(out / "gradients.safetensors")
    for name, parameter in unet.named_parameters():
        parameter.grad = sums.get(name)
    saved = json.loads((out / "report.json").read_text())
    return GradientReport(**{**saved, "losses": {int(t): loss for t, loss in saved["losses"]}})


def measure(model, samples, reference, images, spec: RunSpec, *, labels=None) -> dict:
    """The U-Net's params and MACs, CPU sampling latency (U-Net steps and decoding), FID (digits features), SSIM to
    the teacher; on digits, what the classifier reads (confident rate, Inception Score analogue, class accuracy).
    SSIM and class accuracy come with their 95% intervals over the samples (:mod:`intervals`); FID has none
    (a bootstrap over a few hundred samples is dominated by the bias that repeated samples give FID)."""
    complexity = count_macs(model.unet, example_inputs(model))
    latency = sampling_latency(model, batch_size=min(64, spec.n_samples), steps=spec.sample_steps, repeats=1)
    score = fid(samples, images, reference_name=f"{spec.data}-all")
    pairs = mean_interval(ssim(samples, reference)) if reference is not None else {"value": 1.0, "low": 1.0, "high": 1.0}
    metrics = {**complexity, "seconds_per_image": latency["seconds_per_image"],
               "fid": score["value"], "fid_label": score["label"],
               "ssim": pairs["value"], "ssim_interval": [pairs["low"], pairs["high"]]}
    if model.image_shape[0] == 1 and spec.data == "digits":
        judged = classify_samples(samples, labels=labels)
        metrics |= {key: judged[key] for key in ("confident_rate", "inception_score", "class_accuracy") if key in judged}
        if "class_accuracy" in judged:
            accuracy = proportion_interval(round(judged["class_accuracy"] * len(samples)), len(samples))
            metrics["class_accuracy_interval"] = [accuracy["low"], accuracy["high"]]
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
    model, examples = load_teacher(spec)
    batch = algorithm1_examples(examples, spec)
    inputs = example_inputs(model)
    requested = sample_labels(model, spec.n_samples)
    rows = []

    def snapshot(report):
        k = len(report.timesteps_used)
        if k in counts:
            pruned = copy.deepcopy(model)  # deepcopy leaves .grad behind: carry the sums so far over
            for source, target in zip(model.unet.parameters(), pruned.unet.parameters()):
                target.grad = None if source.grad is None else source.grad.clone()
            prune_unet(pruned.unet, StructureImportance("diff-pruning"), ratio=spec.ratio, inputs=inputs)
            samples = ddim_sample(pruned, n=spec.n_samples, seed=spec.seed, steps=spec.sample_steps, labels=requested,
                                  progress=False)
            rows.append({"timesteps": k, "ssim": mean_ssim(samples, reference),
                         "ssim_std": ssim(samples, reference).std().item()})

    accumulate_gradients(model, batch.images, threshold=0.0, max_steps=max(counts), seed=spec.seed, progress=progress,
                         on_step=snapshot, labels=model.data_conditions(batch)[0])
    return pd.DataFrame(rows)


@dataclass(kw_only=True)
class EqualMacs:
    """Chapter 9's runs on one teacher: Diff-Pruning at the channel ratio, LD-Pruner at the MACs reduction
    Diff-Pruning achieved, per fine-tuning budget, and LD-Pruner's architecture trained from scratch."""
    dense: dict
    macs_reduction: float  # Diff-Pruning's, rounded to four decimals: LD-Pruner's target
    dp: dict = field(default_factory=dict)  # {budget: metrics}
    ld: dict = field(default_factory=dict)
    scratch: dict = field(default_factory=dict)
    specs: dict = field(default_factory=dict)  # {"dp": {budget: spec}, "ld": {budget: spec}, "scratch": spec}


def equal_macs_runs(base: RunSpec, budgets: list, *, root=RUNS_DIR, progress: bool = True) -> EqualMacs:
    """Diff-Pruning (``base.ratio``, ``base.threshold``) and LD-Pruner at equal MACs, each at every budget in
    ``budgets`` (sorted), and LD-Pruner's architecture from scratch at the largest: cached runs."""
    budgets = sorted(set(budgets))
    dense = run(teacher_spec(base), root=root, progress=progress)
    dp_specs = {steps: replace(base, method="diff-pruning", train_steps=steps) for steps in budgets}
    dp = {steps: run(spec, root=root, progress=progress) for steps, spec in dp_specs.items()}
    macs_reduction = round(1 - dp[budgets[0]]["macs"] / dense["macs"], 4)
    ld_specs = {steps: replace(base, method="ld-pruner", ratio=None, macs_reduction=macs_reduction, train_steps=steps)
                for steps in budgets}
    ld = {steps: run(spec, root=root, progress=progress) for steps, spec in ld_specs.items()}
    scratch_spec = replace(ld_specs[budgets[-1]], method="ld-pruner-scratch")
    return EqualMacs(dense=dense, macs_reduction=macs_reduction, dp=dp, ld=ld,
                     scratch=run(scratch_spec, root=root, progress=progress),
                     specs={"dp": dp_specs, "ld": ld_specs, "scratch": scratch_spec})


def latency_versus_macs(teacher, ranking: pd.DataFrame, ratios: list, *, batch_size: int, steps: int,
                        repeats: int) -> pd.DataFrame:
    """Sampling latency (U-Net steps and decoding) against MACs removed, channels against operators.

    For each channel ratio, the channel-pruned shape (magnitude scores: the widths depend on the ratio
    alone) and, where the operators can remove that much, LD-Pruner's modifications from ``ranking`` up
    to the same MACs share; each timed in alternation with ``teacher`` (a DiffusionModel), whose time it
    is reported against (``metrics.relative_latency``).
    """
    inputs = example_inputs(teacher)
    dense_macs = count_macs(teacher.unet, inputs)["macs"]
    ld_limit = ranking.drop_duplicates("operator")["macs_removed"].sum() / dense_macs

    def timed(model) -> dict:
        result = relative_latency(model, teacher, batch_size=batch_size, steps=steps, repeats=repeats)
        return {"seconds": result["seconds"], "teacher seconds": result["reference_seconds"],
                "latency reduction": 1 - result["fraction"], "throughput gain": 1 / result["fraction"] - 1}

    points = []
    for ratio in sorted(set(ratios)):
        channels = copy.deepcopy(teacher)
        prune_unet(channels.unet, StructureImportance("magnitude"), ratio=ratio, inputs=inputs)
        target = 1 - count_macs(channels.unet, inputs)["macs"] / dense_macs
        points.append({"method": "Diff-Pruning (channels)", "ratio": ratio, "MACs removed": target, **timed(channels)})
        if target <= ld_limit:
            operators = copy.deepcopy(teacher)
            prune_by_scores(operators.unet, ranking, macs_reduction=round(target, 4), inputs=inputs)
            removed = 1 - count_macs(operators.unet, inputs)["macs"] / dense_macs
            points.append({"method": "LD-Pruner (operators)", "ratio": ratio, "MACs removed": removed,
                           **timed(operators)})
    return pd.DataFrame(points)
