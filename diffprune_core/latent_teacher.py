"""The latent miniature: a class-conditional latent diffusion model of the digits, shipped in data/latent_teacher.

Its shape follows the ImageNet LDM of Table 3 (CompVis cin256-v2) scaled down, as data/teacher follows
the CIFAR-10 DDPM:

- an autoencoder (diffusers ``AutoencoderKL``, downsampling factor 2, 3 latent channels as the f4 VQ
  autoencoder of cin256 has): 16 x 16 x 1 digits <-> 8 x 8 x 3 latents. It is trained on the MSE of
  the reconstruction plus 1e-6 times the KL term (the KL weight of CompVis's KL autoencoders; their
  perceptual and adversarial losses are left out). Its ``scaling_factor`` is 1 / std of the latents,
  as CompVis sets ``scale_factor``;
- a ``UNet2DConditionModel`` on the latents: widths 32/64/96 (cin256's channel multipliers 1, 2, 3),
  two ResNet blocks per level, cross-attention transformers at every level but the first with heads
  of 32 channels (multi-head attention, as cin256's ``num_head_channels: 32``), GroupNorm, epsilon
  prediction;
- a :class:`pipeline.ClassEmbedder`: one learned 64-dimensional vector per digit, the U-Net's single
  cross-attention token (cin256's ``ClassEmbedder`` and ``context_dim``), trained with the U-Net;
- CompVis's 1000-step "linear" schedule of cin256 (beta from 0.0015 to 0.0195, linear in sqrt(beta):
  diffusers' ``scaled_linear``).

Recipe, two commands (``--seed`` fixes every draw; the second resumes from its checkpoints when run again):

    python -m diffprune_core.latent_teacher autoencoder --out data/latent_teacher.training/autoencoder
    python -m diffprune_core.latent_teacher unet --autoencoder data/latent_teacher.training/autoencoder \\
        --out data/latent_teacher

The second writes a ``ClassLDMPipeline`` folder (``model_index.json``; ``vae/``, ``class_embedder/``,
``unet/``, ``scheduler/``) that :func:`checkpoints.load_model` loads like any pipeline, with
manifest.json (recipes, sha256 of every weights file, training times, quality), the two loss curves
(``autoencoder_loss.csv``, ``unet_loss.csv``, ``loss.png``) and ``samples.png`` (one row per class).
"""
import argparse
import json
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
from diffusers import AutoencoderKL, UNet2DConditionModel

from .architectures import example_inputs
from .checkpoints import first_line, load_model
from .complexity import count_macs, count_params
from .data import load_examples
from .digits_classifier import sha256
from .errors import InputError
from .fileio import atomic_dir, check_output_dir, write_json
from .metrics import mean_ssim
from .pipeline import ClassEmbedder, DiffusionModel, noise_scheduler
from .progress import bar
from .sampling import ddim_sample
from .teacher import sample_quality, save_grid
from .training import TrainConfig, batch_indices, derived_seed, train


IMAGE_SIZE, CLASSES = 16, 10
AUTOENCODER_KWARGS = dict(
    in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(32, 64), layers_per_block=1, latent_channels=3, norm_num_groups=8, sample_size=IMAGE_SIZE,
)
UNET_KWARGS = dict(
    sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64, 96), layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(1, 2, 3),  # diffusers' name for the number of heads here: 32 channels per head
    norm_num_groups=8, cross_attention_dim=64,
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
                        clip_sample=False)
AUTOENCODER_STEPS, UNET_STEPS = 3000, 8000
KL_WEIGHT = 1e-6
GRID_PER_CLASS, QUALITY_SAMPLES, DDIM_STEPS, SAMPLE_SEED = 8, 1000, 100, 0
AUTOENCODER_CONFIG = dict(batch_size=64, lr=1e-3)


def autoencoder_recipe(out_dir, steps: int, seed: int) -> str:
    return f"python -m diffprune_core.latent_teacher autoencoder --out {out_dir} --steps {steps} --seed {seed}"


def unet_recipe(autoencoder_dir, out_dir, steps: int, seed: int) -> str:
    return (f"python -m diffprune_core.latent_teacher unet --autoencoder {autoencoder_dir} --out {out_dir} "
            f"--steps {steps} --seed {seed}")


def unet_config(*, steps: int = UNET_STEPS, seed: int = 0) -> TrainConfig:
    """The CPU preset of the pixel teacher (batch 64, Adam at a constant 1e-3, EMA 0.999, clipping at 1).

    A pilot on this model chose the learning rate: the mean loss of steps 101-150 was 0.095 at 1e-3 and
    0.145 at 3e-4.
    """
    return TrainConfig.cpu(steps=steps, seed=seed)


def train_autoencoder(autoencoder: AutoencoderKL, images: torch.Tensor, *, steps: int, seed: int,
                      progress: bool = True) -> pd.DataFrame:
    """Adam on MSE(x, D(z)) + KL_WEIGHT * KL(q(z|x) || N(0, I)), z drawn from the posterior; returns the losses.

    Batches come from training.batch_indices and the posterior noise from (seed, step), so the run is a
    function of the seed alone.
    """
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=AUTOENCODER_CONFIG["lr"])
    rows = []
    autoencoder.train()
    loop = bar(range(steps), desc="autoencoder training", progress=progress)
    for step in loop:
        x = images[batch_indices(len(images), AUTOENCODER_CONFIG["batch_size"], seed, step)]
        posterior = autoencoder.encode(x).latent_dist
        z = posterior.sample(generator=torch.Generator().manual_seed(derived_seed(seed, step)))
        reconstruction = F.mse_loss(autoencoder.decode(z).sample, x)
        kl = posterior.kl().mean()
        loss = reconstruction + KL_WEIGHT * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rows.append({"step": step + 1, "loss": loss.item(), "mse": reconstruction.item(), "kl": kl.item()})
        if (step + 1) % 50 == 0:
            loop.set_postfix(mse=f"{reconstruction.item():.4f}")
    autoencoder.eval()
    return pd.DataFrame(rows)


@torch.no_grad()
def latent_std(autoencoder: AutoencoderKL, images: torch.Tensor) -> float:
    """The standard deviation of the posterior means of ``images`` (CompVis's scale_factor is its inverse)."""
    return torch.cat([autoencoder.encode(batch).latent_dist.mode() for batch in images.split(256)]).std().item()


def make_autoencoder(out_dir, *, steps: int = AUTOENCODER_STEPS, seed: int = 0, progress: bool = True) -> dict:
    """Stage 1: train the autoencoder on all digits, set its scaling factor, write a diffusers folder + report."""
    out_dir = check_output_dir(out_dir)
    images = load_examples("digits", image_size=IMAGE_SIZE, channels=1).images
    torch.manual_seed(seed)
    autoencoder = AutoencoderKL(**AUTOENCODER_KWARGS)
    started = time.perf_counter()
    losses = train_autoencoder(autoencoder, images, steps=steps, seed=seed, progress=progress)
    wall_time_s = time.perf_counter() - started
    autoencoder.register_to_config(scaling_factor=1.0 / latent_std(autoencoder, images))
    with torch.no_grad():
        decoded = torch.cat([autoencoder.decode(autoencoder.encode(b).latent_dist.mode()).sample for b in images.split(256)])
    report = {"recipe": autoencoder_recipe(out_dir, steps, seed), "seed": seed, "steps": steps,
              **AUTOENCODER_CONFIG, "kl_weight": KL_WEIGHT, "wall_time_s": wall_time_s,
              "seconds_per_step": wall_time_s / steps, "final_mse": float(losses["mse"].tail(50).mean()),
              "scaling_factor": autoencoder.config.scaling_factor,
              "reconstruction": {"mse": F.mse_loss(decoded.clamp(-1, 1), images).item(),
                                 "ssim": mean_ssim(decoded.clamp(-1, 1), images), "images": len(images)}}
    with atomic_dir(out_dir) as tmp:
        autoencoder.save_pretrained(tmp, safe_serialization=True)
        losses.to_csv(tmp / "loss.csv", index=False)
        write_json(tmp / "report.json", report)
    return report


def build_latent_teacher(autoencoder: AutoencoderKL, seed: int = 0) -> DiffusionModel:
    """The class-conditional LDM with random U-Net and class-embedder weights around a trained autoencoder."""
    torch.manual_seed(seed)
    scheduler_config = {"_class_name": "DDPMScheduler", **SCHEDULER_CONFIG}
    return DiffusionModel(unet=UNet2DConditionModel(**UNET_KWARGS), autoencoder=autoencoder,
                          class_embedder=ClassEmbedder(CLASSES, UNET_KWARGS["cross_attention_dim"]),
                          schedule=noise_scheduler(scheduler_config), pipeline="ClassLDMPipeline",
                          scheduler_config=scheduler_config)


def class_grid(model: DiffusionModel, progress: bool) -> torch.Tensor:
    """GRID_PER_CLASS samples of each digit, one digit per row."""
    labels = torch.arange(CLASSES).repeat_interleave(GRID_PER_CLASS)
    return ddim_sample(model, n=len(labels), seed=SAMPLE_SEED, steps=DDIM_STEPS, labels=labels, progress=progress)


def plot_losses(autoencoder_losses: pd.DataFrame, unet_losses: pd.DataFrame, path: Path) -> None:
    """Both training curves, per step and as a running mean of 100 steps, on log scales."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, losses, column, title in ((axes[0], autoencoder_losses, "mse", "autoencoder: reconstruction MSE"),
                                      (axes[1], unet_losses, "loss", "U-Net on latents: DDPM loss (Eq. 2)")):
        ax.plot(losses["step"], losses[column], lw=0.5, alpha=0.35, label="per step")
        ax.plot(losses["step"], losses[column].rolling(100, min_periods=1).mean(), lw=1.5, label="mean of 100 steps")
        ax.set(xlabel="training step", yscale="log", title=title)
        ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def files_sha256(folder: Path) -> dict:
    """{relative path: sha256} of every safetensors file under ``folder``."""
    return {str(path.relative_to(folder)): sha256(path) for path in sorted(folder.rglob("*.safetensors"))}


def make_latent_teacher(autoencoder_dir, out_dir, *, steps: int = UNET_STEPS, seed: int = 0, work_dir=None,
                        progress: bool = True) -> dict:
    """Stage 2: train U-Net and class embedder on the latents of all digits (``work_dir``, default
    ``OUT.training/unet``, resumable), evaluate, write the pipeline folder ``out_dir`` (module doc)."""
    out_dir = check_output_dir(out_dir)
    autoencoder_dir = Path(autoencoder_dir)
    work_dir = Path(work_dir) if work_dir else out_dir.with_name(out_dir.name + ".training") / "unet"
    try:
        autoencoder = AutoencoderKL.from_pretrained(autoencoder_dir, use_safetensors=True).eval()
        autoencoder_report = json.loads((autoencoder_dir / "report.json").read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"no trained autoencoder in {autoencoder_dir} ({first_line(err)}); make it with "
                         f"{autoencoder_recipe(autoencoder_dir, AUTOENCODER_STEPS, seed)}") from None
    examples = load_examples("digits", image_size=IMAGE_SIZE, channels=1)
    model = build_latent_teacher(autoencoder, seed)
    report = train(model, examples.images, unet_config(steps=steps, seed=seed), work_dir, progress=progress,
                   labels=examples.labels)
    evaluation_started = time.perf_counter()
    model = load_model(str(work_dir / "model"))  # the EMA weights, through the loader every user goes through
    grid = class_grid(model, progress)
    labels = torch.arange(QUALITY_SAMPLES) % CLASSES
    samples = ddim_sample(model, n=QUALITY_SAMPLES, seed=SAMPLE_SEED, steps=DDIM_STEPS, labels=labels,
                          progress=progress)
    real = load_examples("digits", image_size=IMAGE_SIZE, channels=1, limit=QUALITY_SAMPLES, seed=SAMPLE_SEED)
    complexity = count_macs(model.unet, example_inputs(model, batch_size=1))
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(work_dir / "model", tmp, dirs_exist_ok=True)
        shutil.copy(autoencoder_dir / "loss.csv", tmp / "autoencoder_loss.csv")
        shutil.copy(work_dir / "loss.csv", tmp / "unet_loss.csv")
        plot_losses(pd.read_csv(tmp / "autoencoder_loss.csv"), pd.read_csv(tmp / "unet_loss.csv"), tmp / "loss.png")
        save_grid(grid, tmp / "samples.png", columns=GRID_PER_CLASS)
        manifest = {
            "recipe": [autoencoder_report["recipe"], unet_recipe(autoencoder_dir, out_dir, steps, seed)],
            "seed": seed,
            "dataset": f"digits: scikit-learn's {len(examples)} handwritten digits with their labels, 8x8 resized to "
                       f"{IMAGE_SIZE}x{IMAGE_SIZE}, in [-1, 1]",
            "architecture": {"pipeline": "ClassLDMPipeline", "vae": {"class": "AutoencoderKL", **AUTOENCODER_KWARGS},
                             "unet": {"class": "UNet2DConditionModel", **UNET_KWARGS},
                             "class_embedder": {"class": "ClassEmbedder", "num_classes": CLASSES,
                                                "embedding_dim": UNET_KWARGS["cross_attention_dim"]}, "scheduler": SCHEDULER_CONFIG},
            "params": {name: count_params(module) for name, module in model.components().items()},
            "unet_macs": complexity["macs"], "unet_macs_with_attention": complexity["macs_with_attention"],
            "sha256": files_sha256(tmp),
            "autoencoder_training": autoencoder_report,
            "unet_training": report,
            "training_wall_time_s": autoencoder_report["wall_time_s"] + report["wall_time_s"],
            "quality": {"sampler": f"DDIM, {DDIM_STEPS} steps, eta 0, seed {SAMPLE_SEED}, classes 0-9 in turn",
                        "samples": sample_quality(samples, examples.images, labels=labels),
                        "real_digits": sample_quality(real.images, examples.images, labels=real.labels),
                        "note": f"real_digits is a random subset of {QUALITY_SAMPLES} of the FID reference (all "
                                f"{len(examples)} digits): a floor for FID and a ceiling for the class accuracy"},
            "evaluation_wall_time_s": time.perf_counter() - evaluation_started,
            "environment": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                            "torch_threads": torch.get_num_threads(), "machine": platform.machine()},
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


def check_latent_teacher(folder) -> dict:
    """The manifest of a shipped latent teacher, after checking every weights file against its sha256."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    found = files_sha256(folder)
    if found != manifest["sha256"]:
        raise InputError(f"the weights in {folder} do not match the sha256 of its manifest.json")
    return manifest


def main(argv=None) -> None:
    matplotlib.use("Agg")  # a command writes its figures to files; a notebook importing this module keeps its backend
    parser = argparse.ArgumentParser(description="Train the latent miniature (module doc): autoencoder, then U-Net.")
    stages = parser.add_subparsers(dest="stage", required=True)
    first = stages.add_parser("autoencoder", help="train the autoencoder on the digits")
    first.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    first.add_argument("--steps", type=int, default=AUTOENCODER_STEPS, help="training steps of batch 64")
    first.add_argument("--seed", type=int, default=0)
    second = stages.add_parser("unet", help="train the U-Net and class embedder on the autoencoder's latents")
    second.add_argument("--autoencoder", required=True, help="the folder written by the autoencoder stage")
    second.add_argument("--out", required=True, help="output pipeline folder (must not exist or be empty)")
    second.add_argument("--steps", type=int, default=UNET_STEPS, help="training steps of batch 64")
    second.add_argument("--seed", type=int, default=0)
    second.add_argument("--work", help="training folder with the checkpoints (default: OUT.training/unet); "
                                       "running the same command again resumes from it")
    args = parser.parse_args(argv)
    try:
        if args.stage == "autoencoder":
            report = make_autoencoder(args.out, steps=args.steps, seed=args.seed)
            print(f"autoencoder written to {args.out}: reconstruction MSE {report['reconstruction']['mse']:.4f}, "
                  f"SSIM {report['reconstruction']['ssim']:.3f}, scaling factor {report['scaling_factor']:.3f}")
        else:
            manifest = make_latent_teacher(args.autoencoder, args.out, steps=args.steps, seed=args.seed,
                                           work_dir=args.work)
            quality = manifest["quality"]["samples"]
            print(f"latent teacher written to {args.out}: {quality['fid_label']} {quality['fid']:.2f}, "
                  f"class accuracy {quality['class_accuracy']:.3f}, confident rate {quality['confident_rate']:.3f}")
    except InputError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
