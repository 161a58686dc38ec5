"""One training loop for every U-Net of the project: the teacher, pruned models and scratch baselines.

DDPM training (Ho et al. 2020, Algorithm 1), the objective of Eq. 2: draw images x_0, timesteps
t ~ U{0, ..., T-1} and noise eps ~ N(0, I), and minimise ||eps - eps_theta(sqrt(a_t) x_0 +
sqrt(1 - a_t) eps, t)||^2 with Adam at a constant learning rate (or its cosine decay to zero over the
run, ``lr_schedule="cosine"``), gradient-norm clipping, and an
exponential moving average (EMA) of the weights; the EMA weights are the result. The EMA is
diffusers' EMAModel, whose decay after n updates is min(ema_decay, (1 + n) / (10 + n)), so short
runs average over their own length rather than over 1 / (1 - ema_decay) steps. Fine-tuning a
pruned model and scratch training (Section 5.1: the pruned architecture, randomly initialised) are
the same call with a different ``model``.

The loop runs on one CPU or under ``accelerate launch`` on several GPUs: every step draws one global
batch and each process takes its share. Every random draw of step s (batch, t, eps, flips, dropout) is
seeded from (seed, s) alone, so a run resumed from a checkpoint ends with bit-identical weights to an
uninterrupted one. Checkpoints are safetensors + JSON only (no pickle).

Files in ``out_dir``: ``checkpoints/step-XXXXXX/`` (``state.safetensors`` with the model, EMA and Adam
tensors, ``state.json`` with the step, time and config), ``loss.csv`` (the loss of every step),
``report.json``, and ``model/`` (the final EMA model, written by :func:`checkpoints.save_model`: a
pipeline folder for a model that came as one).

The model is a :class:`pipeline.DiffusionModel` (or a bare U-Net). A latent model trains its U-Net on
the images encoded once, up front, by its frozen autoencoder; a class-conditional one on the data's
labels, a text one on the data's captions (the empty prompt where the data has none). The U-Net trains,
and with it a ClassLDMPipeline's class embedder (CompVis trains its ClassEmbedder with the U-Net); the
autoencoder and the text encoder stay frozen.
"""
import csv
import json
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.models.resnet import ResnetBlock2D
from diffusers.training_utils import EMAModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .checkpoints import save_model
from .errors import InputError
from .fileio import atomic_dir, check_output_dir, write_json
from .pipeline import as_diffusion_model, rows_of, to_device
from .progress import bar

CHECKPOINT_PREFIX = "step-"
# Independent seed streams: the t and eps of a step, a process's dropout at a step, an epoch's image order,
# the horizontal flips of a step.
NOISE_STREAM, DROPOUT_STREAM, EPOCH_STREAM, FLIP_STREAM = 0, 1, 2, 3
# Settings a resumed run may change; any other change would make it a different run. (Not "steps" under a
# cosine schedule: its every step's learning rate depends on the run's length.)
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "log_every")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(kw_only=True)
class TrainConfig:
    """Hyper-parameters of :func:`train`; ``batch_size`` is the global batch over all processes.

    ``dropout`` is the rate of the U-Net's residual-block dropout while it trains (None: the model's own);
    ``horizontal_flip`` mirrors each training image left-right with probability 1/2 (pixel models only);
    ``lr_schedule`` is one of :data:`LR_SCHEDULES` (:func:`learning_rate`).
    """
    steps: int
    batch_size: int
    lr: float
    ema_decay: float
    grad_clip: float = 1.0
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 0
    dropout: float | None = None
    horizontal_flip: bool = False
    lr_schedule: str = "constant"

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or not self.grad_clip > 0:
            raise InputError(f"lr and grad_clip must be positive, got lr={self.lr}, grad_clip={self.grad_clip}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise InputError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"unknown lr_schedule {self.lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}")

    @classmethod
    def cpu(cls, **overrides) -> "TrainConfig":
        """16x16 digits on a CPU: a step of the teacher takes 0.18 s on one idle core and 0.13 s on two (2026-12-04;
        0.72 s when it was trained), so 6,000 steps take 13 to 18 minutes."""
        return cls(**{"steps": 6000, "batch_size": 64, "lr": 1e-3, "ema_decay": 0.999,
                      "checkpoint_every": 500, "log_every": 50, **overrides})

    @classmethod
    def paper_cifar10(cls, **overrides) -> "TrainConfig":
        """CIFAR-10: DDPM's recipe (Ho et al. 2020, Appendix B: Adam at 2e-4, batch 128, EMA 0.9999,
        gradient clipping at norm 1, dropout 0.1, random horizontal flips; their 5,000-step warm-up is left
        out) and the 100K fine-tuning steps of Diff-Pruning's Table 1. The released code fine-tunes with
        these settings (VainF/Diff-Pruning, ddpm_exp/configs/cifar10.yml: random_flip line 8, dropout
        line 20, ema_rate line 22, batch_size line 33, lr line 46, grad_clip line 50)."""
        return cls(**{"steps": 100_000, "batch_size": 128, "lr": 2e-4, "ema_decay": 0.9999, "grad_clip": 1.0,
                      "checkpoint_every": 5000, "log_every": 100, "dropout": 0.1, "horizontal_flip": True,
                      **overrides})


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of step ``step`` (0-based): ``config.lr`` throughout, or its cosine decay,
    lr * (1 + cos(pi * step / steps)) / 2, from lr at the first step towards 0 at the last (Loshchilov and Hutter
    2017, without restarts: diffusers' ``get_cosine_schedule_with_warmup`` without warm-up). A function of the
    step alone, so a resumed run follows the same schedule."""
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))


def derived_seed(*keys: int) -> int:
    """A 63-bit seed that is a function of ``keys`` (e.g. seed, step, stream) alone."""
    state = np.random.SeedSequence([k % 2**32 for k in keys]).generate_state(2, np.uint32)
    return int(state.view(np.uint64)[0] >> 1)


def batch_indices(count: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The images of global step ``step``: one seeded permutation per epoch, read batch after batch."""
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    first, last = int(positions[0]) // count, int(positions[-1]) // count
    order = torch.cat([torch.randperm(count, generator=torch.Generator().manual_seed(
        derived_seed(seed, epoch, EPOCH_STREAM))) for epoch in range(first, last + 1)])
    return order[positions - first * count]


def draw_batch(images: torch.Tensor, batch_size: int, seed: int, step: int, num_timesteps: int, *,
               flip: bool = False):
    """Step ``step``'s global batch: (x_0, t, eps), drawn on the CPU from (seed, step) alone.

    With ``flip`` each x_0 is mirrored left-right with probability 1/2, as the released CIFAR-10 data
    (RandomHorizontalFlip(p=0.5), ddpm_exp/datasets/__init__.py:35-42), from a stream of its own: t and
    eps are those of the same step without flips.
    """
    generator = torch.Generator().manual_seed(derived_seed(seed, step, NOISE_STREAM))
    x0 = images[batch_indices(len(images), batch_size, seed, step)]
    timesteps = torch.randint(0, num_timesteps, (batch_size,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    if flip:
        mirrored = torch.rand(batch_size, generator=torch.Generator().manual_seed(
            derived_seed(seed, step, FLIP_STREAM))) < 0.5
        x0 = torch.where(mirrored[:, None, None, None], x0.flip(-1), x0)
    return x0, timesteps, noise


def residual_dropouts(unet) -> list:
    """The dropout layers of ``unet``'s residual blocks (ResnetBlock2D.dropout, the rate UNet2DModel's
    ``dropout`` config sets): the released CIFAR-10 model's only dropout (ddpm_exp/models/diffusion.py:95, 125)."""
    return [block.dropout for block in unet.modules() if isinstance(block, ResnetBlock2D)]


@contextmanager
def dropout_rate(layers: list, p: float | None):
    """``layers`` drop at rate ``p`` inside the block and at their own rates again after it, so that a saved
    model's config (UNet2DModel's ``dropout``) stays true."""
    before = [layer.p for layer in layers]
    for layer in layers:
        layer.p = p
    try:
        yield
    finally:
        for layer, rate in zip(layers, before):
            layer.p = rate


def ddpm_loss(unet, x0, timesteps, noise, scheduler, conditions: dict | None = None) -> torch.Tensor:
    """Eq. 2: the mean of ||eps - eps_theta(x_t, t)||^2 with x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps."""
    noisy = scheduler.add_noise(x0, noise, timesteps)
    return F.mse_loss(unet(noisy, timesteps, **(conditions or {})).sample, noise)


def checkpoint_dirs(out_dir) -> list:
    """The complete checkpoints in ``out_dir``, oldest first (unfinished ones are hidden temp folders)."""
    found = (Path(out_dir) / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")
    return sorted(found, key=lambda path: int(path.name.removeprefix(CHECKPOINT_PREFIX)))


def trained_modules(pipe) -> dict:
    """What trains, by checkpoint prefix: the U-Net ("model") and a class embedder if the model has one."""
    return {"model": pipe.unet} | ({"class_embedder": pipe.class_embedder} if pipe.class_embedder is not None else {})


def named_parameters(modules: dict) -> list:
    return [(f"{prefix}.{name}", p) for prefix, module in modules.items() for name, p in module.named_parameters()]


def save_checkpoint(path: Path, modules: dict, ema, optimizer, *, step: int, wall_time_s: float, config: TrainConfig):
    """Model, EMA and Adam tensors into one safetensors file; step, time and config into JSON."""
    tensors = {f"{prefix}.{name}": value for prefix, module in modules.items()
               for name, value in module.state_dict().items()}
    tensors |= {f"ema.{name}": shadow for (name, _), shadow in zip(named_parameters(modules), ema.shadow_params)}
    for index, state in optimizer.state_dict()["state"].items():
        tensors |= {f"optimizer.{index}.{name}": value for name, value in state.items()}
    with atomic_dir(path) as tmp:
        save_file({key: value.detach().cpu().contiguous() for key, value in tensors.items()}, tmp / "state.safetensors")
        write_json(tmp / "state.json", {"step": step, "samples_seen": step * config.batch_size,
                                        "ema_optimization_step": ema.optimization_step,
                                        "wall_time_s": wall_time_s, "config": asdict(config)})


def load_checkpoint(path: Path, modules: dict, ema, optimizer, config: TrainConfig) -> dict:
    """Restore what :func:`save_checkpoint` wrote into ``path``; returns its JSON state."""
    try:
        state = json.loads((path / "state.json").read_text())
        tensors = load_file(path / "state.safetensors", device="cpu")
        for prefix, module in modules.items():
            module.load_state_dict({key.removeprefix(f"{prefix}."): value for key, value in tensors.items()
                                    if key.startswith(f"{prefix}.")})
        for (name, _), shadow in zip(named_parameters(modules), ema.shadow_params):
            shadow.copy_(tensors[f"ema.{name}"])
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        raise InputError(f"cannot resume from checkpoint {path}: {error}") from None
    ema.optimization_step = state["ema_optimization_step"]
    optimizer_state = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": optimizer.state_dict()["param_groups"]})
    # A checkpoint written before a setting existed was made with the setting's default.
    defaults = {field.name: field.default for field in fields(TrainConfig) if field.default is not MISSING}
    saved = {key: value for key, value in {**defaults, **state["config"]}.items() if key not in RESUMABLE_CHANGES}
    wanted = {key: value for key, value in asdict(config).items() if key not in RESUMABLE_CHANGES}
    if saved != wanted:
        raise InputError(f"checkpoint {path} was made with {saved}, not {wanted}; use another output folder")
    if config.lr_schedule != "constant" and state["config"]["steps"] != config.steps:
        raise InputError(f"checkpoint {path} was made for {state['config']['steps']} steps of a {config.lr_schedule} "
                         f"schedule, not {config.steps}; use another output folder")
    if state["step"] > config.steps:
        raise InputError(f"checkpoint {path} is at step {state['step']}, beyond steps={config.steps}")
    return state


def restart_loss_log(path: Path, step: int) -> None:
    """Keep the rows of ``loss.csv`` up to ``step`` (those a resumed run does not redo)."""
    rows = pd.read_csv(path) if step and path.exists() else pd.DataFrame(columns=["step", "loss"])
    rows[rows["step"] <= step].to_csv(path, index=False)


def append_losses(path: Path, first_step: int, losses: list) -> None:
    with open(path, "a", newline="") as file:
        csv.writer(file).writerows([step, repr(loss)] for step, loss in enumerate(losses, first_step))


def train(model, images: torch.Tensor, config: TrainConfig, out_dir, *, resume: bool = True,
          progress: bool = True, labels=None, captions=None) -> dict:
    """Train ``model`` on ``images`` (N x C x H x W in [-1, 1]) by DDPM; returns the report (see module doc).

    ``model`` is a DiffusionModel or a bare U-Net; ``labels`` (class models) or ``captions`` (text models)
    are the images', as ``DiffusionModel.data_conditions`` picks them. With ``resume``, a run continues
    from the last checkpoint in ``out_dir``; otherwise ``out_dir`` must be new or empty. ``config.steps``
    may grow between runs; the other settings may not. On return ``model`` holds the EMA weights, also
    saved in ``out_dir/model``.
    """
    out_dir = Path(out_dir)
    pipe = as_diffusion_model(model)
    # Every process looks at out_dir before Accelerator() joins them, so before the main process writes.
    checkpoints = checkpoint_dirs(out_dir) if resume else []
    if not checkpoints:
        check_output_dir(out_dir)
    pipe.check_images(images)
    dropouts = residual_dropouts(pipe.unet) if config.dropout is not None else []
    if config.dropout is not None and not dropouts:
        raise InputError(f"dropout={config.dropout}: this U-Net has no residual block (diffusers ResnetBlock2D)")
    if config.horizontal_flip and pipe.autoencoder is not None:
        raise InputError("horizontal_flip is for pixel models: a latent model trains on latents encoded once, up front")
    if pipe.class_labels()[0] == "labels" and labels is None:
        raise InputError("a class-conditional model trains on labelled images: digits, cifar10, or a folder with "
                         "one sub-folder per class")
    accelerator = Accelerator()
    if config.batch_size % accelerator.num_processes:
        raise InputError(f"batch size {config.batch_size} does not split over {accelerator.num_processes} processes")
    pipe.to(accelerator.device)
    latents = pipe.encode(images)  # once, up front: the autoencoder is frozen
    scheduler = pipe.schedule
    modules = trained_modules(pipe)
    parameters = [p for _, p in named_parameters(modules)]
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    model, optimizer = accelerator.prepare(pipe.unet, optimizer)
    ema = EMAModel(parameters, decay=config.ema_decay)
    state = load_checkpoint(checkpoints[-1], modules, ema, optimizer, config) if checkpoints else {}
    start, wall_time_before = state.get("step", 0), state.get("wall_time_s", 0.0)
    loss_log = out_dir / "loss.csv"
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        restart_loss_log(loss_log, start)
    share = config.batch_size // accelerator.num_processes
    rows = slice(accelerator.process_index * share, (accelerator.process_index + 1) * share)

    model.train()
    pending, started = [], time.perf_counter()
    loop = bar(range(start, config.steps), initial=start, total=config.steps, desc="DDPM training",
               progress=progress and accelerator.is_main_process)
    with dropout_rate(dropouts, config.dropout):  # the model's own rates again after the loop
        for step in loop:
            torch.manual_seed(derived_seed(config.seed, step, DROPOUT_STREAM, accelerator.process_index))
            batch = draw_batch(latents, config.batch_size, config.seed, step, scheduler.config.num_train_timesteps,
                               flip=config.horizontal_flip)
            x0, timesteps, noise = (value[rows].to(accelerator.device) for value in batch)
            conditions = step_conditions(pipe, labels, captions, batch_indices(len(latents), config.batch_size,
                                                                               config.seed, step))
            conditions = to_device(rows_of(conditions, config.batch_size, rows), accelerator.device)
            loss = ddpm_loss(model, x0, timesteps, noise, scheduler, conditions)
            optimizer.zero_grad(set_to_none=True)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            accelerator.backward(loss)
            if pipe.class_embedder is not None and accelerator.num_processes > 1:  # used outside the DDP wrapper
                for p in pipe.class_embedder.parameters():
                    p.grad = accelerator.reduce(p.grad, "mean")
            accelerator.clip_grad_norm_(parameters, config.grad_clip)
            optimizer.step()
            ema.step(parameters)
            pending.append(loss.detach())
            done = step + 1
            checkpoint_due = done % config.checkpoint_every == 0 or done == config.steps
            if done % config.log_every == 0 or checkpoint_due:
                losses = accelerator.reduce(torch.stack(pending), "mean").tolist()
                pending = []
                loop.set_postfix(loss=f"{np.mean(losses):.4f}")
                if accelerator.is_main_process:
                    append_losses(loss_log, done - len(losses) + 1, losses)
            if checkpoint_due and accelerator.is_main_process:
                save_checkpoint(out_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{done:06d}", modules, ema, optimizer,
                                step=done, wall_time_s=wall_time_before + time.perf_counter() - started, config=config)
    loop.close()
    session_s = time.perf_counter() - started
    accelerator.wait_for_everyone()

    ema.copy_to(parameters)
    for module in modules.values():
        module.eval()
    losses = pd.read_csv(loss_log)["loss"]  # written by the main process before the barrier
    wall_time_s = wall_time_before + session_s  # the sessions' time for the steps kept, not for redone ones
    report = {"steps": config.steps, "resumed_from_step": start, "processes": accelerator.num_processes,
              "conditioning": pipe.conditions(1, labels=None if labels is None else labels[:1],
                                              prompts=None if captions is None else captions[:1])[1],
              "wall_time_s": wall_time_s, "seconds_per_step": wall_time_s / config.steps,
              "final_loss": float(losses.tail(config.log_every).mean()), "final_loss_steps": config.log_every,
              "config": asdict(config)}
    if accelerator.is_main_process:
        if (out_dir / "model").exists():  # a finished run continued to more steps
            shutil.rmtree(out_dir / "model")
        save_model(pipe, out_dir / "model")
        write_json(out_dir / "report.json", report)
    accelerator.wait_for_everyone()
    return report


def step_conditions(pipe, labels, captions, indices) -> dict:
    """The U-Net's keyword inputs for one global batch: its images' labels or captions (module doc)."""
    conditions, _ = pipe.conditions(len(indices), labels=None if labels is None else labels[indices],
                                    prompts=None if captions is None else [captions[i] for i in indices.tolist()])
    return conditions


def reinitialise(model, seed: int):
    """Scratch training's start (Section 5.1): the same, possibly pruned, architecture with fresh weights.

    Every module holding parameters draws them again with its own ``reset_parameters`` (PyTorch's
    default initialisation, which is how diffusers initialises a U-Net), at its current, pruned shape.
    """
    torch.manual_seed(seed)
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is None:
            continue
        if not hasattr(module, "reset_parameters"):
            raise InputError(f"cannot re-initialise {name} ({type(module).__name__}): it has no reset_parameters")
        module.reset_parameters()
    return model
