"""One row of the paper's tables on the embedded default: teacher -> prune -> fine-tune -> sample -> measure.

A :class:`RunSpec` says how a model is obtained (the teacher itself, a pruning criterion, LD-Pruner's
operator pruning, or scratch training of a pruned architecture), how long it trains, and how it is
sampled. :func:`run` does it once and stores the model, the samples and ``metrics.json`` under
``results/runs/<key>/``; the notebooks of Tables 1, 4 and 5 share runs (Diff-Pruning at T = 0.05
and ratio 0.3 is in all three). The gradient sums of Algorithm 1 are shared more widely still, by
every run with the same teacher, batch and T (:func:`gradient_sums`), and Figure 5's passes fill that cache on
their way (:func:`timestep_sums`); LD-Pruner's operator scores, by its runs of one teacher at every budget
(:func:`operator_scores`). The runs a table needs are computed several at once, one process per core with one
torch thread each (:func:`run_all`, :mod:`workers`).
SSIM compares each model's samples with the teacher's from the same seed, hence the same x_T.

The teacher is any model :func:`checkpoints.load_model` reads: the pixel digits teacher, or the latent
miniature (data/latent_teacher, a class-conditional LDM). A class-conditional model is sampled with
the classes in turn (0, 1, ..., 9, 0, ...; :func:`sample_labels`), fine-tuned on the data's labels,
and its class accuracy measured; Algorithm 1's batch carries its images' labels.
"""
import copy
import hashlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torchvision.utils import save_image

from .architectures import DATA_DIR, example_inputs
from .checkpoints import load_model
from .complexity import count_macs
from .criteria import (CRITERIA, GRADIENT_CRITERIA, GradientReport, StructureImportance, accumulate_gradients,
                       check_score_form)
from .data import load_examples
from .digits_classifier import classify_samples
from .errors import InputError
from .fid import fid
from .fileio import atomic_dir, write_json
from .ldpruner import ld_scores, prune_by_scores
from .intervals import mean_interval, proportion_interval
from .metrics import mean_ssim, relative_latencies, ssim
from .pruner import prune, prune_unet
from .pipeline import as_diffusion_model
from .results import library_digest
from .sampling import ddim_sample
from .training import CHECKPOINT_PREFIX, TrainConfig, reinitialise, train
from .workers import default_workers, in_workers, one_torch_thread

RUNS_DIR = DATA_DIR.parent / "results" / "runs"
LD_PRUNER_METHODS = ("ld-pruner", "ld-pruner-scratch")
METHODS = ("teacher", "scratch", *CRITERIA, *LD_PRUNER_METHODS)
LD_SCORES = "ld_scores.csv"  # an LD-Pruner run's operator ranking, beside metrics.json
# a run's metrics that are clock times: the only ones two computations of one run do not share
TIMING_METRICS = ("seconds_per_image", "wall_time_s", "phases_s", "finished")


@dataclass(kw_only=True, frozen=True)
class RunSpec:
    """Everything that determines a run's numbers (and so its cache key)."""
    teacher: str = str(DATA_DIR / "teacher")  # the dense model to prune
    method: str = "diff-pruning"  # "teacher", "scratch" (random init of the pruned shape), a criterion, or
    # "ld-pruner" / "ld-pruner-scratch" (operator pruning; random init of its architecture)
    ratio: float | None = 0.3  # channel pruning ratio ...
    macs_reduction: float | None = None  # ... or the fraction of MACs to remove (Table 4; LD-Pruner's only target)
    threshold: float = 0.05  # Diff-Pruning's T
    score_form: str = "equation"  # the paper's equations or the released code's scores (criteria.SCORE_FORMS)
    max_timesteps: int | None = None  # cap on the timesteps used (Figure 5)
    data: str = "digits"  # training images and the batch of Algorithm 1
    prune_batch: int = 64  # images in Algorithm 1's one batch
    train_steps: int = 600  # fine-tuning (or scratch training) steps; 0 = none
    n_samples: int = 500  # samples for FID and SSIM
    fid_sets: int = 1  # independent sets of n_samples (each from its own x_T): FID is their mean, with a t interval
    sample_steps: int = 100  # DDIM steps (eta 0)
    seed: int = 0
    n_gen: int = 16  # LD-Pruner: samples per scoring set, N_gen
    score_steps: int = 20  # LD-Pruner: DDIM steps of each scoring set

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.method in LD_PRUNER_METHODS and self.macs_reduction is None:
            raise InputError(f"{self.method} runs need macs_reduction, e.g. what a channel-pruning run achieved")
        if self.train_steps < 0 or self.n_samples < 2 or self.fid_sets < 1:
            raise InputError("train_steps must be >= 0, n_samples >= 2 and fid_sets >= 1")
        check_score_form(self.score_form)


def settings_digest(settings: dict, teacher: str) -> str:
    """SHA-256 of ``settings`` (JSON), of :func:`results.library_digest` of this module (the code that computes a
    run, not the chapters' tables and plots) and of the teacher's weight files."""
    folder = Path(teacher)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode() + library_digest("experiments").encode())
    for path in sorted(folder.rglob("*.safetensors")) if folder.is_dir() else []:  # a pipeline's in its folders
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_key(spec: RunSpec) -> str:
    """A readable folder name plus a hash of every setting and of the teacher's weights.

    A teacher run is keyed as :func:`teacher_spec` of itself: its pruning and training settings are unused.
    """
    if spec.method == "teacher":
        spec = teacher_spec(spec)
    label = "teacher" if spec.method == "teacher" else f"{untrained_label(spec)}-s{spec.train_steps}"
    return f"{label}-{settings_digest(asdict(spec), spec.teacher)[:10]}"


def untrained_label(spec: RunSpec) -> str:
    """The part of a run's folder name before its training steps: method and amount pruned."""
    amount = f"m{spec.macs_reduction}" if spec.macs_reduction is not None else f"r{spec.ratio}"
    return f"{spec.method}-{amount}"


def teacher_spec(spec: RunSpec) -> RunSpec:
    """The teacher's own run with the same sampling settings: the reference for SSIM."""
    return replace(spec, method="teacher", ratio=None, macs_reduction=None, threshold=0.0, max_timesteps=None,
                   train_steps=0, score_form="equation")


def run(spec: RunSpec, *, root=RUNS_DIR, progress: bool = True) -> dict:
    """The run's metrics, computed once (with one torch thread, :mod:`workers`) and then read back from
    ``root/<run_key>/metrics.json``. :func:`run_all` computes several at once."""
    out = Path(root) / run_key(spec)
    if not (out / "metrics.json").is_file():
        with one_torch_thread():
            compute_run(spec, out, root, progress)
    return json.loads((out / "metrics.json").read_text())


def compute_run(spec: RunSpec, out: Path, root, progress: bool) -> None:
    """:func:`run`'s work: prune, fine-tune, sample and measure; the model, samples and metrics.json into ``out``."""
    reference = None if spec.method == "teacher" else load_samples(teacher_spec(spec), root, progress)
    clock = PhaseClock()
    model, examples = load_teacher(spec)
    labels, _ = model.data_conditions(examples)
    with atomic_dir(out) as tmp:
        pruning = {}
        if spec.method in LD_PRUNER_METHODS:
            scores = operator_scores(spec, root, progress)  # ld_prune, with the scoring shared
            pruning = {"modifications": prune_by_scores(model.unet, scores, macs_reduction=spec.macs_reduction,
                                                        inputs=example_inputs(model))}
            scores.to_csv(tmp / LD_SCORES, index=False)
        elif spec.method != "teacher":
            criterion = "magnitude" if spec.method == "scratch" else spec.method
            batch = algorithm1_examples(examples, spec)
            batch_labels, _ = model.data_conditions(batch)
            gradients = (gradient_sums(model, batch.images, spec, root, progress, labels=batch_labels)
                         if criterion in GRADIENT_CRITERIA else None)
            pruning = prune(model, criterion, ratio=None if spec.macs_reduction else spec.ratio,
                            macs_reduction=spec.macs_reduction, images=batch.images, labels=batch_labels,
                            threshold=spec.threshold, max_steps=spec.max_timesteps, seed=spec.seed,
                            progress=progress, gradients=gradients, score_form=spec.score_form)
        clock.lap("pruning")
        if spec.method in ("scratch", "ld-pruner-scratch"):
            for module in (model.unet, model.class_embedder):  # what trains starts anew (the autoencoder stays)
                if module is not None:
                    reinitialise(module, spec.seed)
        if spec.train_steps and spec.method != "teacher":
            train(model, examples.images, TrainConfig.cpu(steps=spec.train_steps, seed=spec.seed), tmp / "train",
                  resume=continue_shorter_run(spec, root, tmp / "train"), progress=progress, labels=labels)
        clock.lap("fine_tuning")
        n = spec.n_samples * spec.fid_sets
        requested = sample_labels(model, n)
        samples = ddim_sample(model, n=n, seed=spec.seed, steps=spec.sample_steps, labels=requested, progress=progress)
        seconds_per_image = clock.lap("sampling") / n
        metrics = {**measure(model, samples, reference, examples.images, spec, labels=requested),
                   "seconds_per_image": seconds_per_image}
        clock.lap("measuring")
        metrics.update(method=spec.method, ratio=pruning.get("ratio"), threshold=pruning.get("threshold"),
                       timesteps_used=len(pruning.get("timesteps_used", [])),
                       operators_modified=len(pruning.get("modifications", [])), train_steps=spec.train_steps,
                       wall_time_s=round(clock.total(), 1), phases_s=clock.laps, finished=clock.now(),
                       spec=asdict(spec))
        save_samples(samples, tmp)
        write_json(tmp / "metrics.json", metrics)


def continue_shorter_run(spec: RunSpec, root, train_dir: Path) -> bool:
    """Copy into ``train_dir`` the last checkpoint and loss log of the longest cached run that is ``spec`` with
    fewer training steps, so that ``spec`` trains on from there; False if there is none. Training resumes bit for
    bit (:mod:`training`), so the run's numbers are those of one trained from its start: Table 1's scratch
    baselines of 300, 900 and 1,500 steps train 1,500 steps, not 2,700."""
    prefix = untrained_label(spec)
    steps = []
    for path in Path(root).glob(f"{prefix}-s*-*"):
        found = re.fullmatch(rf"{re.escape(prefix)}-s(\d+)-[0-9a-f]{{10}}", path.name)
        if found and 0 < int(found[1]) < spec.train_steps:
            steps.append(int(found[1]))
    for shorter in (replace(spec, train_steps=count) for count in sorted(steps, reverse=True)):
        folder = Path(root) / run_key(shorter)
        last = folder / "train" / "checkpoints" / f"{CHECKPOINT_PREFIX}{shorter.train_steps:06d}"
        if is_cached(shorter, root) and last.is_dir():
            shutil.copytree(last, train_dir / "checkpoints" / last.name)
            shutil.copy(folder / "train" / "loss.csv", train_dir / "loss.csv")
            return True
    return False


class PhaseClock:
    """Wall time of a run's phases (pruning with Algorithm 1 unless its sums are cached, fine-tuning, sampling,
    measuring), kept in its metrics.json for the build profile (``tools/build_profile.py``)."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps = {}

    def lap(self, phase: str) -> float:
        """Seconds since the last lap (or the start), recorded as ``phase``'s."""
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        self.laps[phase] = round(elapsed, 2)
        return elapsed

    def total(self) -> float:
        return time.perf_counter() - self.start

    @staticmethod
    def now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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

    They do not depend on the ratio, the MACs target, the score form or the fine-tuning, and Taylor and
    Diff-Pruning at T = 0 sum the same gradients, so they are computed once and read back from
    ``root/gradients/<key>/`` (safetensors plus JSON) by every run that needs them
    (:func:`share_gradient_sums` fills that cache for several T with one pass).
    """
    out = gradient_sums_dir(spec, root)
    unet = as_diffusion_model(model).unet
    if not (out / "report.json").is_file():
        with one_torch_thread():
            report = accumulate_gradients(model, batch, threshold=sums_threshold(spec), max_steps=spec.max_timesteps,
                                          seed=spec.seed, progress=progress, labels=labels)
        write_gradient_sums(out, {name: p.grad for name, p in unet.named_parameters() if p.grad is not None}, report)
        return report
    sums = load_file(out / "gradients.safetensors")
    for name, parameter in unet.named_parameters():
        parameter.grad = sums.get(name)
    saved = json.loads((out / "report.json").read_text())
    return GradientReport(**{**saved, "losses": {int(t): loss for t, loss in saved["losses"]}})


def sums_threshold(spec: RunSpec) -> float:
    return spec.threshold if spec.method == "diff-pruning" else 0.0


def gradient_sums_dir(spec: RunSpec, root) -> Path:
    threshold = sums_threshold(spec)
    settings = {"data": spec.data, "prune_batch": spec.prune_batch, "seed": spec.seed, "threshold": threshold,
                "max_timesteps": spec.max_timesteps}
    return Path(root) / "gradients" / f"T{threshold:g}-{settings_digest(settings, spec.teacher)[:10]}"


def write_gradient_sums(out: Path, sums: dict, report: GradientReport) -> None:
    with atomic_dir(out) as tmp:
        save_file({name: grad.contiguous() for name, grad in sums.items()}, tmp / "gradients.safetensors")
        write_json(tmp / "report.json", {**asdict(report), "losses": list(report.losses.items())})


def share_gradient_sums(spec: RunSpec, thresholds: list, *, root=RUNS_DIR, progress: bool = True) -> None:
    """:func:`gradient_sums` of Diff-Pruning at every T in ``thresholds`` into the cache, from one pass of
    Algorithm 1 that stops where the lowest T not cached yet stops (with one torch thread, :mod:`workers`).
    Thresholds already cached are skipped (:class:`PendingSums`)."""
    pending = PendingSums(spec, thresholds, root)
    if not pending.folders:
        return
    model, examples = load_teacher(spec)
    batch = algorithm1_examples(examples, spec)
    with one_torch_thread():
        report = accumulate_gradients(model, batch.images, threshold=min(pending.folders),
                                      max_steps=spec.max_timesteps, seed=spec.seed, progress=progress,
                                      snapshot_if=pending.stops_at, snapshot=partial(pending.keep, unet=model.unet),
                                      labels=model.data_conditions(batch)[0])
    pending.keep_the_rest(report, model.unet)


def operator_scores(spec: RunSpec, root=RUNS_DIR, progress: bool = True) -> pd.DataFrame:
    """LD-Pruner's scores of ``spec``'s teacher (``ldpruner.ld_scores`` with its N_gen, DDIM steps and seed).

    They do not depend on the MACs target or the training, so they are computed once (with one torch thread) and
    read back from ``root/ld_scores/<key>/`` by every run that needs them: LD-Pruner's runs of one teacher at
    every fine-tuning budget and from scratch (:func:`run_all` computes them before those runs).
    """
    out = operator_scores_dir(spec, root)
    if not (out / LD_SCORES).is_file():
        model, _ = load_teacher(spec)
        with one_torch_thread():
            scores = ld_scores(model, n_gen=spec.n_gen, sample_steps=spec.score_steps, seed=spec.seed,
                               progress=progress)
        with atomic_dir(out) as tmp:
            scores.to_csv(tmp / LD_SCORES, index=False)
    return pd.read_csv(out / LD_SCORES)  # read back, so that computed and cached scores are one table


def operator_scores_dir(spec: RunSpec, root) -> Path:
    settings = {"n_gen": spec.n_gen, "score_steps": spec.score_steps, "seed": spec.seed}
    return Path(root) / "ld_scores" / settings_digest(settings, spec.teacher)[:10]


class PendingSums:
    """Algorithm 1's sums not in :func:`gradient_sums`' cache yet for ``spec``'s teacher, batch and noise: at each T
    in ``thresholds`` (Diff-Pruning's), and over the first k timesteps for each k in ``counts`` (T = 0 with
    ``max_timesteps`` k: Figure 5's points); written there as one pass at a lower T gets to where a pass at T
    stops, or to its k-th timestep.

    With one batch and one noise, a pass at T visits the same L_t as a pass at a lower T and stops at the
    first t with L_t / L_max <= T, so its sums are the lower pass's sums over the timesteps before that t:
    the same additions in the same order (``accumulate_gradients``' snapshots), so the same numbers as a pass
    of its own; and a pass capped at k sums what a longer pass has summed once it has used k timesteps.
    """

    def __init__(self, spec: RunSpec, thresholds, root, counts=()):
        folders = {t: gradient_sums_dir(replace(spec, method="diff-pruning", threshold=t), root)
                   for t in sorted(set(thresholds))}
        self.folders = {t: out for t, out in folders.items() if not (out / "report.json").is_file()}  # T -> folder
        capped = {k: gradient_sums_dir(replace(spec, method="diff-pruning", threshold=0.0, max_timesteps=k), root)
                  for k in sorted(set(counts))}
        self.capped = {k: out for k, out in capped.items() if not (out / "report.json").is_file()}  # k -> folder

    def stops_at(self, report, t, ratio) -> bool:
        """``snapshot_if``: whether a pass at a pending T stops at this t, or a pending k of timesteps are used."""
        return any(ratio <= threshold for threshold in self.folders) or len(report.timesteps_used) in self.capped

    def keep(self, report, t, *, unet) -> None:
        """``snapshot``: the sums so far, for every pending T whose pass stops at t and the pending k just used."""
        sums = {name: p.grad.clone() for name, p in unet.named_parameters() if p.grad is not None}
        for threshold in [threshold for threshold in self.folders if report.losses[t] / report.loss_max <= threshold]:
            stopped = GradientReport(timesteps_used=list(report.timesteps_used), losses=dict(report.losses),
                                     loss_max=report.loss_max, stopped_at=t)
            write_gradient_sums(self.folders.pop(threshold), sums, stopped)
        if len(report.timesteps_used) in self.capped:
            self.keep_capped(report, sums)

    def keep_capped(self, report, sums: dict) -> None:
        """The sums of the k timesteps used so far, with the report of a pass capped at k (it saw their L_t only)."""
        used = list(report.timesteps_used)
        losses = {t: report.losses[t] for t in used}
        write_gradient_sums(self.capped.pop(len(used)), sums,
                            GradientReport(timesteps_used=used, losses=losses, loss_max=max(losses.values())))

    def keep_the_rest(self, report, unet, *, unreached_thresholds: bool = True) -> None:
        """After the pass: the k it ended at; with ``unreached_thresholds`` (the pass went as far as theirs would:
        every timestep, or their cap) the T it never stopped at use all its sums, as T = 0."""
        sums = {name: p.grad for name, p in unet.named_parameters() if p.grad is not None}
        if len(report.timesteps_used) in self.capped:
            self.keep_capped(report, sums)
        for out in self.folders.values() if unreached_thresholds else ():
            write_gradient_sums(out, sums, report)
        self.folders = {}


def measure(model, samples, reference, images, spec: RunSpec, *, labels=None) -> dict:
    """The U-Net's params and MACs, FID (digits features), SSIM to the teacher; on digits, what the classifier
    reads (confident rate, Inception Score analogue, class accuracy). (The sampling latency, U-Net steps and
    decoding in batches of 64, is the time :func:`run` took to draw ``samples``.)

    SSIM and class accuracy come with their 95% intervals over all the samples (:mod:`intervals`). FID is
    measured on each of ``spec.fid_sets`` sets of ``spec.n_samples`` samples; with more than one set it is their
    mean with the t interval over the sets ('fid_interval', each set's FID in 'fid_per_set'). Sets of their own
    x_T, not a bootstrap of one set: resampling with repeats biases FID upwards by more than its spread
    (``benchmarks/fid_intervals.py``)."""
    complexity = count_macs(model.unet, example_inputs(model))
    scores = [fid(block, images, reference_name=f"{spec.data}-all") for block in samples.split(spec.n_samples)]
    values = [score["value"] for score in scores]
    pairs = mean_interval(ssim(samples, reference)) if reference is not None else {"value": 1.0, "low": 1.0, "high": 1.0}
    metrics = {**complexity, "fid": values[0], "fid_label": scores[0]["label"],
               "ssim": pairs["value"], "ssim_interval": [pairs["low"], pairs["high"]]}
    if len(values) > 1:
        over_sets = mean_interval(values)
        metrics |= {"fid": over_sets["value"], "fid_interval": [over_sets["low"], over_sets["high"]], "fid_per_set": values}
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


def run_all(specs: list, *, root=RUNS_DIR, progress: bool = True, workers: int | None = None) -> list:
    """:func:`run` of every spec, in order: the metrics of each.

    The runs not cached yet are computed ``workers`` at a time (:func:`workers.in_workers`; default one per
    core), longest fine-tuning first, after what they share, computed the same way: their teachers' runs (the
    reference of SSIM), Algorithm 1's gradient sums, one pass per teacher, batch and noise for all the T
    wanted of it (:func:`share_gradient_sums`; Taylor's sums are Diff-Pruning's at T = 0), and LD-Pruner's
    scores (:func:`operator_scores`). Runs that differ only
    in their training steps are computed in one process, fewest steps first, each training on from the one
    before (:func:`continue_shorter_run`).
    """
    missing = [spec for spec in dict.fromkeys(specs) if not is_cached(spec, root)]
    teachers = [spec for spec in dict.fromkeys(map(teacher_spec, missing)) if not is_cached(spec, root)]
    passes = {}  # the folder of a T = 0 pass (what its sums depend on) -> (a spec of it, the thresholds wanted)
    for spec in missing:
        if spec.method in GRADIENT_CRITERIA:
            shared = replace(spec, method="diff-pruning", threshold=0.0)
            passes.setdefault(gradient_sums_dir(shared, root), (shared, set()))[1].add(sums_threshold(spec))
    scorings = {operator_scores_dir(spec, root): spec for spec in missing if spec.method in LD_PRUNER_METHODS}
    shared_work = [partial(run, spec, root=root, progress=False) for spec in teachers] + [
        partial(share_gradient_sums, shared, sorted(thresholds), root=root, progress=False)
        for shared, thresholds in passes.values()] + [
        partial(operator_scores, spec, root=root, progress=False) for out, spec in scorings.items()
        if not (out / LD_SCORES).is_file()]
    chains = {}  # runs that differ only in their training steps, fewest first: each continues the one before
    for spec in sorted((spec for spec in missing if spec.method != "teacher"), key=lambda spec: spec.train_steps):
        chains.setdefault((replace(spec, train_steps=0), spec.train_steps > 0), []).append(spec)
    pending = sorted(chains.values(), key=lambda chain: -chain[-1].train_steps)
    in_workers([shared_work, [partial(run_in_turn, chain, root=root) for chain in pending]], workers=workers,
               progress=progress, desc="runs, their teachers and Algorithm 1 passes")
    return [run(spec, root=root, progress=progress) for spec in specs]


def run_in_turn(specs: list, *, root) -> list:
    """:func:`run` of each spec, one after another (a chain of :func:`run_all`)."""
    return [run(spec, root=root, progress=False) for spec in specs]


def is_cached(spec: RunSpec, root) -> bool:
    return (Path(root) / run_key(spec) / "metrics.json").is_file()


def check_seeds(seeds: list) -> None:
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"seeds must be distinct and at least one, got {seeds}")


def table(specs: list, *, root=RUNS_DIR, progress: bool = True, workers: int | None = None) -> pd.DataFrame:
    """One row of metrics per spec, in order (:func:`run_all`)."""
    return pd.DataFrame(run_all(specs, root=root, progress=progress, workers=workers)).drop(columns="spec")


def replicates(specs: list, seeds: list, *, root=RUNS_DIR, progress: bool = True,
               workers: int | None = None) -> pd.DataFrame:
    """:func:`table` of every spec at every seed (the seed replaces ``spec.seed``: it fixes Algorithm 1's batch
    and noise, the fine-tuning order and x_T): one row per run, with 'row' (the spec's position) and 'seed'.
    :func:`intervals.over_seeds` turns it into a mean and an interval per row."""
    check_seeds(seeds)
    every = table([replace(spec, seed=seed) for seed in seeds for spec in specs], root=root, progress=progress,
                  workers=workers)
    return every.assign(row=list(range(len(specs))) * len(seeds), seed=[seed for seed in seeds for _ in specs])


def removed_channels(spec: RunSpec, *, root=RUNS_DIR, progress: bool = True) -> dict:
    """The channels ``spec``'s pruning removes from its teacher, before any fine-tuning: {root layer of each group:
    (width, removed indices)} (``pruner.prune_unet``'s record), with Algorithm 1's sums from the shared cache."""
    if spec.method not in CRITERIA or spec.ratio is None:
        raise InputError(f"removed_channels needs a channel criterion and a ratio, got {spec.method!r}, {spec.ratio}")
    model, examples = load_teacher(spec)
    if spec.method in GRADIENT_CRITERIA:
        batch = algorithm1_examples(examples, spec)
        gradient_sums(model, batch.images, spec, root, progress, labels=model.data_conditions(batch)[0])
    removed = {}
    prune_unet(model.unet, StructureImportance(spec.method, seed=spec.seed, score_form=spec.score_form),
               ratio=spec.ratio, inputs=example_inputs(model), removed=removed)
    return removed


def shared_channels(a: dict, b: dict) -> pd.DataFrame:
    """Per layer of two :func:`removed_channels` records: its width, how many channels each removes, how many
    both remove, and that count's share of those removed."""
    if set(a) != set(b) or any(len(a[layer][1]) != len(b[layer][1]) for layer in a):
        raise InputError("the two prunings remove different numbers of channels: compare runs of one ratio")
    frame = pd.DataFrame([{"layer": layer, "width": width, "removed": len(idxs),
                           "shared": len(set(idxs) & set(b[layer][1]))} for layer, (width, idxs) in a.items()])
    return frame.assign(share=frame["shared"] / frame["removed"])


def ssim_versus_timesteps(spec: RunSpec, counts: list, seeds: list, *, root=RUNS_DIR, progress: bool = True,
                          workers: int | None = None, keep_thresholds: tuple = ()) -> pd.DataFrame:
    """Figure 5: SSIM to the teacher of models pruned with the first k timesteps, k in ``counts``, no fine-tuning,
    at each seed in ``seeds`` (it replaces ``spec.seed``): one row per seed and k.

    One pass of Algorithm 1 per seed (:func:`timestep_sums`) keeps the sums at every k, and each point
    (:func:`ssim_after_timesteps`) prunes with them and samples. The work runs ``workers`` at a time
    (:func:`workers.in_workers`: one torch thread each, so the numbers do not depend on ``workers``), the seeds in
    waves of ``workers``: the passes of one wave beside the points of the wave before, so that no core waits
    while a lone pass runs. Each pass also keeps Algorithm 1's sums at the T in ``keep_thresholds`` for the runs
    of its seed, so that they need no pass of their own."""
    check_seeds(seeds)
    specs = [replace(spec, seed=seed) for seed in seeds]
    size = default_workers() if workers is None else workers
    waves = [specs[start:start + size] for start in range(0, len(specs), size)]
    passes = [[partial(timestep_sums, each, counts, root=root, keep_thresholds=keep_thresholds) for each in wave]
              for wave in waves]
    points = [[partial(ssim_after_timesteps, each, k, root=root) for each in wave for k in sorted(set(counts))]
              for wave in waves]
    teachers = [partial(run, teacher_spec(each), root=root, progress=False) for each in specs]  # SSIM's references
    stages = [passes[0] + teachers] + [passes[i] + points[i - 1] for i in range(1, len(waves))] + [points[-1]]
    done = in_workers(stages, workers=workers, progress=progress, desc="Figure 5 passes and points")
    rows = [row for stage, wave in zip(done[1:], points) for row in stage[len(stage) - len(wave):]]
    return pd.DataFrame(rows)


def timestep_sums(spec: RunSpec, counts: list, *, root=RUNS_DIR, keep_thresholds: tuple = ()) -> None:
    """Figure 5's pass at ``spec.seed``: Algorithm 1 with T = 0 over max(counts) timesteps, keeping the sums at each
    k in ``counts`` in :func:`gradient_sums`' cache (as ``max_timesteps`` k: :class:`PendingSums`). The pass is the
    one a Diff-Pruning run at T stops on its way: it keeps the sums at each T in ``keep_thresholds`` not cached yet
    for the runs (those that stop after max(counts) only if the pass visited every timestep)."""
    pending = PendingSums(replace(spec, max_timesteps=None), keep_thresholds, root, counts=counts)
    if not pending.capped and not pending.folders:
        return
    model, examples = load_teacher(spec)
    batch = algorithm1_examples(examples, spec)
    with one_torch_thread():
        report = accumulate_gradients(model, batch.images, threshold=0.0, max_steps=max(counts), seed=spec.seed,
                                      progress=False, snapshot_if=pending.stops_at,
                                      snapshot=partial(pending.keep, unet=model.unet),
                                      labels=model.data_conditions(batch)[0])
    pending.keep_the_rest(report, model.unet,
                          unreached_thresholds=len(report.losses) == len(model.schedule.alphas_cumprod))


def ssim_after_timesteps(spec: RunSpec, k: int, *, root=RUNS_DIR) -> dict:
    """One point of Figure 5 at ``spec.seed``: the teacher pruned at ``spec.ratio`` with the Diff-Pruning score of
    the sums over its first k timesteps (:func:`gradient_sums`, which :func:`timestep_sums` keeps), sampled from
    the teacher's x_T without fine-tuning; SSIM to the teacher's samples, mean and standard deviation."""
    reference = load_samples(teacher_spec(spec), root, progress=False)[:spec.n_samples]  # the first of its fid_sets
    model, examples = load_teacher(spec)
    batch = algorithm1_examples(examples, spec)
    with one_torch_thread():
        gradient_sums(model, batch.images, replace(spec, method="diff-pruning", threshold=0.0, max_timesteps=k), root,
                      progress=False, labels=model.data_conditions(batch)[0])
        prune_unet(model.unet, StructureImportance("diff-pruning", score_form=spec.score_form), ratio=spec.ratio,
                   inputs=example_inputs(model))
        samples = ddim_sample(model, n=spec.n_samples, seed=spec.seed, steps=spec.sample_steps,
                              labels=sample_labels(model, spec.n_samples), progress=False)
    return {"timesteps": k, "ssim": mean_ssim(samples, reference), "ssim_std": ssim(samples, reference).std().item(),
            "seed": spec.seed}


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


def equal_macs_runs(comparisons: list, *, root=RUNS_DIR, progress: bool = True,
                    workers: int | None = None) -> list:
    """An :class:`EqualMacs` for each ``(base, budgets)`` in ``comparisons``: Diff-Pruning (``base.ratio``,
    ``base.threshold``) and LD-Pruner at equal MACs, each at every budget in ``budgets``, and LD-Pruner's
    architecture from scratch at the largest.

    LD-Pruner's target is the share of the MACs the channel ratio removes (:func:`channel_macs_reduction`), known
    before any run, so every run of every comparison is one :func:`run_all` (``workers`` at a time): no core waits
    between the methods or the teachers. Diff-Pruning's runs are checked to remove exactly that share.
    """
    plans = []
    for base, budgets in comparisons:
        macs_reduction = channel_macs_reduction(base)
        budgets = sorted(set(budgets))
        dp = {steps: replace(base, method="diff-pruning", train_steps=steps) for steps in budgets}
        ld = {steps: replace(base, method="ld-pruner", ratio=None, macs_reduction=macs_reduction, train_steps=steps)
              for steps in budgets}
        scratch = replace(ld[budgets[-1]], method="ld-pruner-scratch")
        plans.append((macs_reduction, {"dp": dp, "ld": ld, "scratch": scratch}))
    run_all([spec for _, specs in plans for spec in (*specs["dp"].values(), *specs["ld"].values(), specs["scratch"])],
            root=root, progress=progress, workers=workers)  # with their teachers' runs

    def metrics(spec: RunSpec) -> dict:
        return run(spec, root=root, progress=progress)

    done = []
    for macs_reduction, specs in plans:
        dense = metrics(teacher_spec(specs["scratch"]))
        dp = {steps: metrics(spec) for steps, spec in specs["dp"].items()}
        achieved = round(1 - dp[min(dp)]["macs"] / dense["macs"], 4)
        if achieved != macs_reduction:
            raise RuntimeError(f"Diff-Pruning removed {achieved} of the MACs, not the {macs_reduction} its ratio's "
                               "widths remove: its widths depend on more than the ratio")
        done.append(EqualMacs(dense=dense, macs_reduction=macs_reduction, dp=dp,
                              ld={steps: metrics(spec) for steps, spec in specs["ld"].items()},
                              scratch=metrics(specs["scratch"]), specs=specs))
    return done


def channel_macs_reduction(spec: RunSpec) -> float:
    """The share of the teacher U-Net's MACs that channel pruning at ``spec.ratio`` removes, rounded to four
    decimals (LD-Pruner's target at equal MACs). The kept widths depend on the ratio alone (``pruner.py``), so
    magnitude scores give every channel criterion's architecture, without Algorithm 1's gradients."""
    if spec.ratio is None:
        raise InputError("equal-MACs runs need a channel ratio: LD-Pruner's target is what it removes")
    model = load_model(spec.teacher)
    inputs = example_inputs(model)
    dense = count_macs(model.unet, inputs)["macs"]
    prune_unet(model.unet, StructureImportance("magnitude"), ratio=spec.ratio, inputs=inputs)
    return round(1 - count_macs(model.unet, inputs)["macs"] / dense, 4)


def latency_versus_macs(teacher, ranking: pd.DataFrame, ratios: list, *, batch_size: int, steps: int,
                        repeats: int) -> pd.DataFrame:
    """Sampling latency (U-Net steps and decoding) against MACs removed, channels against operators.

    For each channel ratio, the channel-pruned shape (magnitude scores: the widths depend on the ratio
    alone) and, where the operators can remove that much, LD-Pruner's modifications from ``ranking`` up
    to the same MACs share; all timed in one alternation with ``teacher`` (a DiffusionModel), whose time each
    is reported against (``metrics.relative_latencies``).
    """
    inputs = example_inputs(teacher)
    dense_macs = count_macs(teacher.unet, inputs)["macs"]
    ld_limit = ranking.drop_duplicates("operator")["macs_removed"].sum() / dense_macs
    points, models = [], []
    for ratio in sorted(set(ratios)):
        channels = copy.deepcopy(teacher)
        prune_unet(channels.unet, StructureImportance("magnitude"), ratio=ratio, inputs=inputs)
        target = 1 - count_macs(channels.unet, inputs)["macs"] / dense_macs
        points.append({"method": "Diff-Pruning (channels)", "ratio": ratio, "MACs removed": target})
        models.append(channels)
        if target <= ld_limit:
            operators = copy.deepcopy(teacher)
            prune_by_scores(operators.unet, ranking, macs_reduction=round(target, 4), inputs=inputs)
            removed = 1 - count_macs(operators.unet, inputs)["macs"] / dense_macs
            points.append({"method": "LD-Pruner (operators)", "ratio": ratio, "MACs removed": removed})
            models.append(operators)
    timed = relative_latencies(dict(enumerate(models)), teacher, batch_size=batch_size, steps=steps, repeats=repeats)
    return pd.DataFrame([{**point, "seconds": result["seconds"], "teacher seconds": result["reference_seconds"],
                          "latency reduction": 1 - result["fraction"], "throughput gain": 1 / result["fraction"] - 1}
                         for point, result in zip(points, timed.values())])
