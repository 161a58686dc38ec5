"""The project's teacher: a small DDPM U-Net trained on the embedded digits, shipped in data/teacher.

Its shape follows the paper's CIFAR-10 DDPM (google/ddpm-cifar10-32) at 16x16 pixels and one
channel: the same block types, attention at the second resolution, GroupNorm, sinusoidal time
embedding. Widths are 16/32/32/32 with 4 GroupNorm groups, i.e. 4 channels per group at width 16
and 8 at width 32, as 128/32 and 256/32 in the paper, so the paper's rounding (pruner.py) prunes it
the same way.

Recipe: ``python -m diffprune_core.teacher --out DIR [--steps N] [--seed S] [--lr-schedule cosine]`` trains it with
:func:`training.train` (checkpoints in ``DIR.training``; running the command again resumes) and
writes DIR: config.json + diffusion_pytorch_model.safetensors (``UNet2DModel.from_pretrained(DIR)``),
loss.csv and loss.png, samples.png (64 samples, 100 DDIM steps, seed 0) and manifest.json.
"""
import argparse
import platform
import shutil
import time
from pathlib import Path

import diffusers
import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torchvision.utils import save_image

from .architectures import example_inputs
from .checkpoints import WEIGHTS
from .complexity import count_macs
from .data import load_images
from .digits_classifier import classify_samples, sha256
from .errors import InputError
from .fid import fid
from .fileio import atomic_dir, check_output_dir, write_json
from .sampling import ddim_sample
from .training import LR_SCHEDULES, TrainConfig, train


TEACHER_UNET_KWARGS = dict(
    sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32, 32), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    attention_head_dim=None, norm_num_groups=4, norm_eps=1e-6, downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, act_fn="silu",
)
TEACHER_STEPS = 6000
GRID_SAMPLES, QUALITY_SAMPLES, DDIM_STEPS, SAMPLE_SEED = 64, 1000, 100, 0


def teacher_config(*, steps: int = TEACHER_STEPS, seed: int = 0, lr_schedule: str = "constant") -> TrainConfig:
    """The CPU preset: batch 64, Adam at a constant 1e-3, EMA 0.999, clipping at 1, a checkpoint every 500 steps.

    The learning rate comes from a pilot on this model: after 150 steps the mean loss of steps
    101-150 was 0.050 at 1e-3 and 0.087 at DDPM's 2e-4 (set for a U-Net 63 times larger).
    20,000 steps, with a constant or a cosine learning rate, did not lower FID beyond its interval
    (``benchmarks/teacher_recipes.py``; README, "What is miniature"), so the recipe keeps 6,000.
    """
    return TrainConfig.cpu(steps=steps, seed=seed, lr_schedule=lr_schedule)


def build_teacher(seed: int = 0) -> UNet2DModel:
    """The teacher's architecture with random weights (the starting point of the recipe)."""
    torch.manual_seed(seed)
    return UNet2DModel(**TEACHER_UNET_KWARGS)


def recipe_command(out_dir, steps: int, seed: int, lr_schedule: str = "constant") -> str:
    schedule = "" if lr_schedule == "constant" else f" --lr-schedule {lr_schedule}"
    return f"python -m diffprune_core.teacher --out {out_dir} --steps {steps} --seed {seed}{schedule}"


def sample_quality(samples: torch.Tensor, images: torch.Tensor, *, labels=None) -> dict:
    """Do the samples read as digits? FID (digits features) and what the classifier reads in them
    (``classify_samples``: confident rate, Inception Score analogue, class accuracy given ``labels``)."""
    distance = fid(samples, images, reference_name="digits")
    return {**classify_samples(samples, labels=labels), "fid": distance["value"], "fid_label": distance["label"]}


def plot_loss(losses: pd.DataFrame, path: Path) -> None:
    """The loss of every step, and its running mean over 100 steps, on a log scale."""
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(losses["step"], losses["loss"], lw=0.5, alpha=0.35, label="per step")
    axes.plot(losses["step"], losses["loss"].rolling(100, min_periods=1).mean(), lw=1.5, label="mean of 100 steps")
    axes.set(xlabel="training step", ylabel="DDPM loss (Eq. 2)", yscale="log", title="Teacher on digits 16x16")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def save_grid(samples: torch.Tensor, path: Path, *, columns: int = 8, zoom: int = 4) -> None:
    """Samples in [-1, 1] as one PNG grid, each pixel shown as zoom x zoom."""
    save_image(F.interpolate(samples, scale_factor=zoom, mode="nearest") * 0.5 + 0.5, path, nrow=columns,
               padding=zoom, pad_value=1.0)


def make_teacher(out_dir, *, steps: int = TEACHER_STEPS, seed: int = 0, lr_schedule: str = "constant", work_dir=None,
                 progress: bool = True) -> dict:
    """The recipe (module doc): train in ``work_dir`` (default ``OUT.training``), evaluate, write ``out_dir``."""
    out_dir = check_output_dir(out_dir)
    work_dir = Path(work_dir) if work_dir else out_dir.with_name(out_dir.name + ".training")
    size = TEACHER_UNET_KWARGS["sample_size"]
    images = load_images("digits", image_size=size, channels=1)
    model = build_teacher(seed)
    report = train(model, images, teacher_config(steps=steps, seed=seed, lr_schedule=lr_schedule), work_dir,
                   progress=progress)
    evaluation_started = time.perf_counter()
    model = model.cpu().eval()
    grid = ddim_sample(model, n=GRID_SAMPLES, seed=SAMPLE_SEED, steps=DDIM_STEPS, progress=progress)
    samples = ddim_sample(model, n=QUALITY_SAMPLES, seed=SAMPLE_SEED, steps=DDIM_STEPS, progress=progress)
    real = load_images("digits", image_size=size, channels=1, limit=QUALITY_SAMPLES, seed=SAMPLE_SEED)
    complexity = count_macs(model, example_inputs(model, batch_size=1))
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copy(work_dir / "loss.csv", tmp / "loss.csv")
        plot_loss(pd.read_csv(tmp / "loss.csv"), tmp / "loss.png")
        save_grid(grid, tmp / "samples.png")
        manifest = {
            "recipe": recipe_command(out_dir, steps, seed, lr_schedule),
            "seed": seed, "steps": steps,
            "dataset": f"digits: scikit-learn's {len(images)} handwritten digits, 8x8 resized to {size}x{size}, in [-1, 1]",
            "architecture": {"class": "UNet2DModel", **TEACHER_UNET_KWARGS},
            "params": complexity["params"], "macs": complexity["macs"],
            "macs_with_attention": complexity["macs_with_attention"],
            "weights": WEIGHTS, "sha256": sha256(tmp / WEIGHTS),
            "training": report,
            "training_wall_time_s": report["wall_time_s"],  # summed over the sessions of a resumed run
            "final_loss": report["final_loss"],
            "quality": {"sampler": f"DDIM, {DDIM_STEPS} steps, eta 0, seed {SAMPLE_SEED}",
                        "samples": sample_quality(samples, images),
                        f"real_digits_{QUALITY_SAMPLES}": sample_quality(real, images),
                        "note": f"real_digits_{QUALITY_SAMPLES} is a random subset of the FID reference (all "
                                f"{len(images)} digits), so its FID is a floor that even a perfect model's "
                                "samples would not reach"},
            "evaluation_wall_time_s": time.perf_counter() - evaluation_started,
            "environment": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                            "torch_threads": torch.get_num_threads(), "machine": platform.machine()},
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


def main(argv=None) -> None:
    matplotlib.use("Agg")  # a command writes its figures to files; a notebook importing this module keeps its backend
    parser = argparse.ArgumentParser(description="Train the digits teacher U-Net and write it to a new folder.")
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--steps", type=int, default=TEACHER_STEPS, help="training steps of batch 64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES,
                        help="constant learning rate, or its cosine decay to 0 over the steps (default: constant)")
    parser.add_argument("--work", help="training folder with the checkpoints (default: OUT.training); "
                                       "running the same command again resumes from it")
    args = parser.parse_args(argv)
    try:
        manifest = make_teacher(args.out, steps=args.steps, seed=args.seed, lr_schedule=args.lr_schedule,
                                work_dir=args.work)
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
    quality = manifest["quality"]["samples"]
    print(f"teacher written to {args.out}: final loss {manifest['final_loss']:.4f}, "
          f"confident-prediction rate {quality['confident_rate']:.3f}, {quality['fid_label']} {quality['fid']:.2f}")


if __name__ == "__main__":
    main()
