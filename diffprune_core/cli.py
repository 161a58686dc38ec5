"""``python -m diffprune_core COMMAND``: the library's steps for a practitioner's own model and images.

A model is a diffusers pipeline folder (DDPM, DDIM, LDM, Stable Diffusion) or U-Net folder, loaded as one
:class:`pipeline.DiffusionModel`: latent models are encoded and decoded, conditional ones get the labels or
captions of --data, or --class-labels / --prompts, and every report.json says which conditioning was used.

Commands: prune, finetune, sample, evaluate (``python -m diffprune_core COMMAND --help`` for each).
Every command validates its arguments before it loads anything, writes its outputs into a fresh
folder atomically (nothing is left behind on failure) with a JSON report beside them, and turns bad
input into a one-line ``error: ...`` with exit status 1. The one exception to atomic writing is
``finetune``, whose folder fills with checkpoints as it trains so that ``--resume`` can continue it.
"""
import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch
from accelerate import PartialState
from safetensors.torch import save_file

from . import checkpoints
from .architectures import example_inputs
from .complexity import count_macs, count_params, pipeline_complexity, pipeline_params
from .criteria import CRITERIA, GRADIENT_CRITERIA, SCORE_FORMS
from .data import DATASETS, check_dataset, load_examples
from .digits_classifier import classify_samples
from .errors import InputError
from .fid import CACHE_DIR, INCEPTION_WEIGHTS_URL, extractor_arguments, fid, to_uint8
from .fileio import atomic_dir, check_output_dir, write_json
from .ldpruner import enumerate_operators, ld_prune
from .metrics import mean_ssim, sampling_latency
from .pruner import CHUNK_COUNTS, Widths, check_ratio, prune
from .sampling import SPACINGS, ddim_sample
from .teacher import save_grid as save_zoomed_grid
from .training import TrainConfig, checkpoint_dirs, reinitialise, train

LD_PRUNER = "ld-pruner"
DEFAULT_RATIO = 0.3
TRAIN_PRESETS = {"cpu": TrainConfig.cpu, "paper-cifar10": TrainConfig.paper_cifar10}
DATA_HELP = (f"images: {', '.join(DATASETS)} (digits: scikit-learn's handwritten digits, offline, labelled; "
             "folder:PATH: every image file under PATH, center-cropped and resized to the model's size, labelled by "
             "sub-folder or captioned by PATH/metadata.jsonl)")
MODEL_HELP = ("a folder written by prune or finetune (OUT/model), a diffusers pipeline folder (DDPM, DDIM, LDM, "
              "Stable Diffusion: model_index.json) or U-Net folder, a hub id")


class Parser(argparse.ArgumentParser):
    """argparse that turns a bad command line into an InputError (one line, exit 1), not usage text and exit 2."""

    def error(self, message):
        raise InputError(f"{message} (see: {self.prog} --help)")


def command_parser(commands, name: str, *, summary: str, description: str, examples: str):
    return commands.add_parser(name, help=summary, description=description, epilog=f"examples:\n{examples}",
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def check_at_least(minimum: int, values: dict) -> None:
    """Every {flag: value} must be at least ``minimum``."""
    for flag, value in values.items():
        if value < minimum:
            raise InputError(f"{flag} must be at least {minimum}, got {value}")


def check_ddim(steps: int, eta: float = 0.0, flag: str = "--steps") -> None:
    if not 1 <= steps <= 1000:
        raise InputError(f"{flag} must be in [1, 1000] (DDIM steps over the 1000 training timesteps), got {steps}")
    if eta < 0:
        raise InputError(f"--eta must be >= 0 (0: deterministic DDIM), got {eta}")


def sampling_device() -> torch.device:
    """DDIM sampling runs on the GPU when there is one; x_T is drawn on the CPU from the seed, so it is the same."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_examples(model, data: str, *, limit: int | None = None, seed: int = 0):
    """The images of ``data`` at the model's image shape (decoded images for a latent model), with labels or captions."""
    channels, size, _ = model.image_shape
    if channels not in (1, 3):
        raise InputError(f"this U-Net's samples have {channels} channels, not an image's 1 or 3: a latent U-Net needs "
                         "its autoencoder (give the pipeline folder)")
    return load_examples(data, image_size=size, channels=channels, limit=limit, seed=seed)


def read_prompts(path: str | None) -> list | None:
    """One prompt a line (blank lines skipped); an empty or missing file is an error."""
    if path is None:
        return None
    try:
        prompts = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read --prompts {path}: {err}") from None
    if not prompts:
        raise InputError(f"--prompts {path} holds no prompt (one a line)")
    return prompts


def parse_labels(text: str | None) -> list | None:
    if text is None:
        return None
    try:
        return [int(label) for label in text.split(",")]
    except ValueError:
        raise InputError(f"--class-labels takes comma-separated integers, e.g. 0,3,7; got {text!r}") from None


def repeated(values: list | None, n: int):
    """``values`` cycled to n entries (labels or prompts for n samples)."""
    return None if values is None else [values[i % len(values)] for i in range(n)]


def add_conditioning_arguments(p) -> None:
    p.add_argument("--class-labels", help="class-conditional models: comma-separated labels, cycled over the samples "
                                          "(default: drawn from --seed)")
    p.add_argument("--prompts", help="text-to-image models: a file of prompts, one a line, cycled over the samples "
                                     "(default: the empty prompt)")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance scale of a text-to-image model (default 1: no guidance)")


def add_sampler_arguments(p) -> None:
    p.add_argument("--spacing", choices=SPACINGS, default="uniform",
                   help="DDIM timesteps: uniform (default: the scheduler's, 0, 10, ..., 990 for 100 steps of a DDPM "
                        "schedule) or quad (the released Diff-Pruning CIFAR-10 evaluation: int(s^2) for s evenly "
                        "spaced in [0, sqrt(0.8 T)], T training timesteps)")
    p.add_argument("--no-clip-sample", action="store_true",
                   help="do not clip DDIM's predicted x_0 to [-1, 1], as the released evaluation (default: the "
                        "model's scheduler config, clip_sample)")


def sampler_options(args) -> dict:
    """ddim_sample's spacing and clip_sample of the command line (clip_sample None: the model's scheduler config)."""
    return {"spacing": args.spacing, "clip_sample": False if args.no_clip_sample else None}


def clips_x0(args, model) -> bool:
    """Whether DDIM clips ``model``'s predicted x_0: not with --no-clip-sample, else as its scheduler config says."""
    return not args.no_clip_sample and bool(model.schedule.config.clip_sample)


def check_conditioning(args) -> tuple:
    """(labels, prompts) of the command line, read and checked before any model is loaded."""
    if args.class_labels is not None and args.prompts is not None:
        raise InputError("give --class-labels (a class model) or --prompts (a text model), not both")
    if args.guidance_scale < 0:
        raise InputError(f"--guidance-scale must be >= 0, got {args.guidance_scale}")
    return parse_labels(args.class_labels), read_prompts(args.prompts)


def complexity_change(before: dict, after: dict, pipeline_before: int, pipeline_after: int) -> dict:
    """The U-Net's params and MACs (the paper's columns) and the whole pipeline's params, before and after."""
    return {"params_before": before["params"], "params_after": after["params"],
            "macs_before": before["macs"], "macs_after": after["macs"],
            "macs_with_attention_before": before["macs_with_attention"],
            "macs_with_attention_after": after["macs_with_attention"],
            "pipeline_params_before": pipeline_before, "pipeline_params_after": pipeline_after}


# ---------------------------------------------------------------------------------------------- prune

def add_prune_parser(commands) -> None:
    p = command_parser(
        commands, "prune", summary="prune a diffusers U-Net or pipeline (Diff-Pruning, its baselines, LD-Pruner)",
        description="Prune a diffusers U-Net or pipeline and write it to a new folder (weights, widths.json,\n"
                    "report.json; a pipeline folder again for a pipeline).\n\n"
                    "Channel pruning (--criterion random, magnitude, taylor, diff-pruning): every layer loses the\n"
                    "same fraction of channels, set by --ratio or found for --macs-reduction. taylor and\n"
                    "diff-pruning score channels with gradients of the DDPM loss on one batch of --data (encoded\n"
                    "by a latent model's autoencoder; conditioned on its labels or captions).\n"
                    "Operator pruning (--criterion ld-pruner): whole resnet/attention blocks are removed or\n"
                    "replaced by a 1x1 convolution, the least important first, until --operators K blocks are\n"
                    "modified or --macs-reduction F of the MACs are gone. Importance = how far the mean and std of\n"
                    "--n-gen samples (DDIM, --sample-steps, fixed --seed; latents of a latent model) move when\n"
                    "one block is modified;\n"
                    "the ranking is written to ranking.csv. The output folder loads as --model in every command.",
        examples="  python -m diffprune_core prune --model google/ddpm-cifar10-32 --criterion diff-pruning \\\n"
                 "      --ratio 0.3 --data cifar10 --out pruned\n"
                 "  python -m diffprune_core prune --model my_unet/ --criterion magnitude --macs-reduction 0.44 --out p44\n"
                 "  python -m diffprune_core prune --model my_unet/ --criterion ld-pruner --operators 6 --out ld6")
    p.add_argument("--model", required=True, help=MODEL_HELP + ", or paper:NAME (random weights)")
    p.add_argument("--criterion", required=True,
                   help=f"channel criteria: {', '.join(CRITERIA)}; operator pruning: {LD_PRUNER}")
    p.add_argument("--ratio", type=float, default=None,
                   help=f"channel pruning ratio p in (0, 1) (default {DEFAULT_RATIO}; not for ld-pruner)")
    p.add_argument("--macs-reduction", type=float, default=None,
                   help="instead of --ratio (or --operators): the fraction of MACs to remove, in (0, 1) (Table 4)")
    p.add_argument("--threshold", type=float, default=0.05,
                   help="Diff-Pruning's T in [0, 1): timesteps with L_t/L_max <= T are dropped (default 0.05)")
    p.add_argument("--score-form", choices=list(SCORE_FORMS), default="equation",
                   help="channel criteria: equation (default: the paper's Eq. 5-6 and 10, the group L2 norm) or "
                        "released-code (the scores of VainF/Diff-Pruning's ddpm_exp, behind Tables 1 and 5: "
                        "squared (w g)^2 on convs and linears, |w g| on GroupNorm scales; taylor = diff-pruning at T 0)")
    p.add_argument("--data", default="digits", help=f"gradient criteria only: {DATA_HELP} (default digits)")
    p.add_argument("--batch-size", type=int, default=64, help="clean images in the one batch of Algorithm 1 (default 64)")
    p.add_argument("--stride", type=int, default=1, help="visit every stride-th timestep (default 1: all)")
    p.add_argument("--timesteps-per-forward", type=int, default=None,
                   help="timesteps of Algorithm 1 sharing one forward/backward (default: as many as fit in memory, "
                        "at most 8; the same timesteps and sums as 1, faster)")
    p.add_argument("--round-to", type=int, default=None, help="round kept channels up as Torch-Pruning 1.x (LDM: 2)")
    p.add_argument("--multiple-of", type=int, default=None,
                   help="keep widths that are the nearest multiple of this the GroupNorm groups and heads allow "
                        "(e.g. 8, which kernels like: 179 -> 176); default: the paper's widths")
    p.add_argument("--chunk-count", choices=sorted(CHUNK_COUNTS), default="channels",
                   help="how a group reached through a projection into two halves (GEGLU feed-forwards) is counted: "
                        "channels (default: it loses --ratio of its channels) or outputs (Torch-Pruning 1.x, the "
                        "paper's LDM widths: about twice --ratio)")
    p.add_argument("--operators", type=int, default=None,
                   help="ld-pruner: the number K of operators to modify (or give --macs-reduction)")
    p.add_argument("--n-gen", type=int, default=16, help="ld-pruner: samples per scoring set, N_gen (default 16)")
    p.add_argument("--sample-steps", type=int, default=25,
                   help="ld-pruner: DDIM steps of each scoring set's sampling (default 25)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the noise, the batch and the random criterion; ld-pruner's fixed x_T (default 0)")
    p.add_argument("--out", required=True, help="new folder for the weights, widths.json and report.json")
    p.set_defaults(run=run_prune)


def run_prune(args) -> dict:
    if args.criterion == LD_PRUNER:
        return run_ld_pruner(args)
    if args.criterion not in CRITERIA:
        raise InputError(f"unknown criterion {args.criterion!r}; choose from {', '.join((*CRITERIA, LD_PRUNER))}")
    if args.operators is not None:
        raise InputError(f"--operators is a target of --criterion {LD_PRUNER}; channel criteria take --ratio")
    if args.ratio is not None and args.macs_reduction is not None:
        raise InputError("give --ratio or --macs-reduction, not both")
    ratio = None
    if args.macs_reduction is not None:
        check_ratio(args.macs_reduction, "--macs-reduction")
    else:
        ratio = check_ratio(DEFAULT_RATIO if args.ratio is None else args.ratio)
    if not 0.0 <= args.threshold < 1.0:
        raise InputError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.batch_size < 1 or args.stride < 1 or args.timesteps_per_forward is not None and args.timesteps_per_forward < 1:
        raise InputError("--batch-size, --stride and --timesteps-per-forward must be positive")
    if args.criterion in GRADIENT_CRITERIA:
        check_dataset(args.data)
    widths = Widths(round_to=args.round_to, multiple_of=args.multiple_of, chunk_count=args.chunk_count)
    check_output_dir(args.out)
    start = time.perf_counter()

    model = checkpoints.load_model(args.model)
    examples, labels, prompts = None, None, None
    if args.criterion in GRADIENT_CRITERIA:
        examples = model_examples(model, args.data, limit=args.batch_size, seed=args.seed)
        labels, prompts = model.data_conditions(examples)
    inputs = example_inputs(model)
    before, pipeline_before = count_macs(model.unet, inputs), pipeline_params(model)
    done = prune(model, args.criterion, ratio=ratio, macs_reduction=args.macs_reduction,
                 images=None if examples is None else examples.images, labels=labels, prompts=prompts,
                 threshold=args.threshold, stride=args.stride, widths=widths, seed=args.seed, score_form=args.score_form,
                 timesteps_per_forward=args.timesteps_per_forward)
    report = {
        "command": "prune", "model": args.model, "pipeline": model.pipeline, "criterion": args.criterion,
        "score_form": args.score_form,
        "ratio": done["ratio"], "macs_reduction_target": args.macs_reduction, "threshold": done["threshold"],
        "round_to": args.round_to, "multiple_of": args.multiple_of, "chunk_count": args.chunk_count,
        "timesteps_used": done["timesteps_used"], "num_timesteps_used": len(done["timesteps_used"]),
        "data": args.data if examples is not None else None,
        "conditioning": (model.conditions(len(examples), labels=labels, prompts=prompts, seed=args.seed)[1]
                         if examples is not None else None),
        "seed": args.seed,
        **complexity_change(before, count_macs(model.unet, inputs), pipeline_before, pipeline_params(model)),
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    with atomic_dir(args.out) as tmp:
        checkpoints.write_model(model, tmp)
        write_json(tmp / "report.json", report)
    return report


def run_ld_pruner(args) -> dict:
    """LD-Pruner: score every operator modification on N_gen samples, apply the lowest-scoring ones."""
    if args.ratio is not None:
        raise InputError(f"--ratio is for channel criteria; {LD_PRUNER} takes --operators K or --macs-reduction F")
    if (args.operators is None) == (args.macs_reduction is None):
        raise InputError(f"{LD_PRUNER} needs exactly one target: --operators K or --macs-reduction F")
    if args.macs_reduction is not None:
        check_ratio(args.macs_reduction, "--macs-reduction")
    check_at_least(1, {"--n-gen": args.n_gen})
    if args.operators is not None:
        check_at_least(1, {"--operators": args.operators})
    check_ddim(args.sample_steps, flag="--sample-steps")
    check_output_dir(args.out)
    start = time.perf_counter()

    model = checkpoints.load_model(args.model).to(sampling_device())
    available = len(enumerate_operators(model.unet))
    if args.operators is not None and args.operators > available:
        raise InputError(f"--operators {args.operators}: this U-Net has {available} operators")
    inputs = example_inputs(model)
    before, pipeline_before = count_macs(model.unet, inputs), pipeline_params(model)
    done = ld_prune(model, macs_reduction=args.macs_reduction, n_operators=args.operators, n_gen=args.n_gen,
                    sample_steps=args.sample_steps, seed=args.seed)
    report = {
        "command": "prune", "model": args.model, "pipeline": model.pipeline, "criterion": LD_PRUNER, "ratio": None,
        "macs_reduction_target": args.macs_reduction, "operators_target": args.operators,
        "threshold": None, "timesteps_used": [], "num_timesteps_used": 0, "data": None,
        "conditioning": model.conditions(args.n_gen, seed=args.seed)[1], "scored": done["scored"],
        "seed": args.seed, "n_gen": args.n_gen, "sample_steps": args.sample_steps,
        **complexity_change(before, count_macs(model.unet, inputs), pipeline_before, pipeline_params(model)),
        "operators_modified": [list(modification) for modification in done["modifications"]],
        "num_operators_modified": len(done["modifications"]),
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    with atomic_dir(args.out) as tmp:
        checkpoints.write_model(model.to("cpu"), tmp)
        done["scores"].sort_values("rank").to_csv(tmp / "ranking.csv", index=False)
        write_json(tmp / "report.json", report)
    return report


# ------------------------------------------------------------------------------------------- finetune

def describe_preset(config) -> str:
    augmentation = ((f", dropout {config.dropout:g}" if config.dropout is not None else "")
                    + (", random horizontal flips" if config.horizontal_flip else ""))
    return (f"batch {config.batch_size}, Adam lr {config.lr:g}, EMA {config.ema_decay:g}, clip {config.grad_clip:g}"
            f"{augmentation}, a checkpoint every {config.checkpoint_every} steps")


def add_finetune_parser(commands) -> None:
    presets = "\n".join(f"  {name}: {describe_preset(make(steps=1))}" for name, make in TRAIN_PRESETS.items())
    p = command_parser(
        commands, "finetune", summary="fine-tune a (pruned) U-Net by DDPM training, or train it from scratch",
        description="Train a diffusers U-Net on images (their labels or captions for a conditional model, encoded\n"
                    "once by a latent model's frozen autoencoder) with the DDPM loss (Eq. 2): Adam at a\n"
                    "constant learning rate, gradient clipping, an EMA of the weights. The EMA weights are the\n"
                    "result: OUT/model (give it as --model to sample, evaluate or prune). OUT also holds\n"
                    "checkpoints/step-N/ (safetensors + JSON, no pickle), loss.csv and report.json.\n"
                    "--init random trains the same (pruned) architecture from a fresh initialisation: the\n"
                    "paper's scratch-training baseline, same loop and data.\n\n"
                    f"presets (flags you give override them):\n{presets}\n\n"
                    "Resume: an interrupted run continues from its last checkpoint when you run the same\n"
                    "command again with --resume (--steps may grow; other settings, --model, --init and --data\n"
                    "must stay the same); the result is bit-identical to an uninterrupted run. Without\n"
                    "--resume, OUT must be new or empty.\n\n"
                    "Several GPUs: start the same command with `accelerate launch -m diffprune_core finetune ...`;\n"
                    "--batch-size is the global batch, split over the processes.",
        examples="  python -m diffprune_core finetune --model pruned/ --data folder:my_images --steps 20000 --out ft\n"
                 "  python -m diffprune_core finetune --model pruned/ --data folder:my_images --steps 40000 --out ft \\\n"
                 "      --resume\n"
                 "  python -m diffprune_core finetune --model pruned/ --init random --data digits --steps 6000 \\\n"
                 "      --out scratch\n"
                 "  accelerate launch -m diffprune_core finetune --model pruned/ --data cifar10 \\\n"
                 "      --preset paper-cifar10 --steps 100000 --out ft-cifar10")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--steps", type=int, required=True, help="total training steps (of one global batch each)")
    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default="cpu", help="hyper-parameters (default cpu)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the preset's)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's)")
    p.add_argument("--ema-decay", type=float, help="EMA decay in [0, 1) (default: the preset's)")
    p.add_argument("--grad-clip", type=float, help="gradient-norm clipping (default: the preset's)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: the preset's)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of every random draw (batches, t, noise, init) (default 0)")
    p.add_argument("--init", choices=("pretrained", "random"), default="pretrained",
                   help="start from the model's weights (fine-tuning, default) or re-initialise them (scratch)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    p.add_argument("--out", required=True, help="the run's folder (new or empty, unless --resume)")
    p.set_defaults(run=run_finetune)


def run_finetune(args) -> dict | None:
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "ema_decay": args.ema_decay,
                 "grad_clip": args.grad_clip, "checkpoint_every": args.checkpoint_every, "seed": args.seed}
    config = TRAIN_PRESETS[args.preset](**{key: value for key, value in overrides.items() if value is not None})
    if not (args.resume and checkpoint_dirs(args.out)):
        check_output_dir(args.out)
    check_dataset(args.data)

    model = checkpoints.load_model(args.model)
    if args.init == "random":
        reinitialise(model.unet, args.seed)
    examples = model_examples(model, args.data)
    labels, captions = model.data_conditions(examples)
    trained = train(model, examples.images, config, args.out, resume=args.resume, labels=labels, captions=captions)
    if not PartialState().is_main_process:
        return None
    report = {"command": "finetune", "model": args.model, "pipeline": model.pipeline, "init": args.init,
              "data": args.data, "images": len(examples), "preset": args.preset, "params": count_params(model.unet),
              "result": str(Path(args.out) / "model"), **trained}
    write_json(Path(args.out) / "report.json", report)  # train's report, with what it was trained from
    return report


# --------------------------------------------------------------------------------------------- sample

def add_sample_parser(commands) -> None:
    p = command_parser(
        commands, "sample", summary="draw images from a U-Net or pipeline by DDIM",
        description="Draw --n images by DDIM (Song et al.; the paper's sampler: 100 steps, eta 0) from noise\n"
                    "x_T fixed by --seed alone, so two models given the same seed start from the same noise;\n"
                    "a latent model's samples are decoded. --class-labels or --prompts condition them;\n"
                    "--spacing quad --no-clip-sample samples as the released code's CIFAR-10 evaluation.\n"
                    "Writes samples.safetensors (key 'samples': uint8 N x C x H x W, pixel = round((x + 1) * 127.5)),\n"
                    "grid.png and report.json into a new folder. Sampling runs on the GPU when there is one.",
        examples="  python -m diffprune_core sample --model ft/model --n 64 --seed 0 --out samples\n"
                 "  python -m diffprune_core sample --model google/ddpm-cifar10-32 --n 16 --seed 0 --steps 50 --out s")
    p.add_argument("--model", required=True, help=MODEL_HELP + ", or paper:NAME (random weights)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, required=True, help="seed of x_T (and of the eta > 0 noise)")
    p.add_argument("--steps", type=int, default=100, help="DDIM steps, 1 to 1000 (default 100)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta >= 0 (default 0: deterministic)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass; samples do not depend on it")
    add_sampler_arguments(p)
    add_conditioning_arguments(p)
    p.add_argument("--out", required=True, help="new folder for samples.safetensors, grid.png and report.json")
    p.set_defaults(run=run_sample)


def save_grid(samples: torch.Tensor, path: Path) -> None:
    """Samples in [-1, 1] as one PNG, 8 a row, small images enlarged (nearest) to at least 64 pixels."""
    save_zoomed_grid(samples, path, zoom=max(1, 64 // samples.shape[-1]))


def run_sample(args) -> dict:
    check_at_least(1, {"--n": args.n, "--batch-size": args.batch_size})
    check_ddim(args.steps, args.eta)
    labels, prompts = check_conditioning(args)
    check_output_dir(args.out)

    model = checkpoints.load_model(args.model).to(sampling_device())
    labels, prompts = repeated(labels, args.n), repeated(prompts, args.n)
    start = time.perf_counter()
    samples = ddim_sample(model, n=args.n, seed=args.seed, steps=args.steps, eta=args.eta, batch_size=args.batch_size,
                          labels=labels, prompts=prompts, guidance_scale=args.guidance_scale, **sampler_options(args))
    seconds = time.perf_counter() - start
    pixels = to_uint8(samples)
    report = {"command": "sample", "model": args.model, "pipeline": model.pipeline, "n": args.n, "seed": args.seed,
              "steps": args.steps, "eta": args.eta, "spacing": args.spacing, "clip_sample": clips_x0(args, model),
              "batch_size": args.batch_size, "shape": list(pixels.shape),
              "conditioning": model.conditions(args.n, labels=labels, prompts=prompts, seed=args.seed)[1],
              "guidance_scale": args.guidance_scale,
              "sampling_wall_time_s": round(seconds, 3), "device": str(sampling_device()),
              "torch_threads": torch.get_num_threads()}
    with atomic_dir(args.out) as tmp:
        save_file({"samples": pixels.contiguous()}, tmp / "samples.safetensors",
                  metadata={"layout": "uint8 N x C x H x W", "pixel": "round((x + 1) * 127.5)", "seed": str(args.seed)})
        save_grid(samples, tmp / "grid.png")
        write_json(tmp / "report.json", report)
    return report


# ------------------------------------------------------------------------------------------- evaluate

def add_evaluate_parser(commands) -> None:
    p = command_parser(
        commands, "evaluate", summary="#Params, MACs, latency, FID, SSIM of a U-Net or pipeline",
        description="Measure a U-Net as the paper's tables do and write report.json (and grid.png) to a new folder:\n"
                    "  params, macs (convs + linears, batch 1, the paper's convention), macs_with_attention;\n"
                    "  latency: median wall time of one DDIM run of --latency-batch-size images on the CPU;\n"
                    "  fid: --n samples (DDIM, --steps, --seed; on the GPU if there is one) against all images\n"
                    "    of --data, always labelled:\n"
                    "    'FID (digits features)' by default (the shipped digits classifier's features: a quick\n"
                    "    check, on another scale than the paper's), 'FID (Inception-v3)' with --inception-weights;\n"
                    "    reference statistics are cached in --fid-cache as safetensors + JSON;\n"
                    "  ssim_to_reference: with --reference (e.g. the dense model before pruning), the mean SSIM\n"
                    "    between the two models' samples from the same x_T (the paper's consistency metric);\n"
                    "  digits_classifier: for 1-channel 16x16 models, the digits classifier's confident-prediction\n"
                    "    rate (top softmax >= 0.9) and the histogram of predicted digits.",
        examples="  python -m diffprune_core evaluate --model ft/model --reference teacher/ --data digits \\\n"
                 "      --n 1000 --seed 0 --out eval-ft\n"
                 "  python -m diffprune_core evaluate --model ft-cifar10/model --reference google/ddpm-cifar10-32 \\\n"
                 "      --data cifar10 --n 50000 --seed 0 --spacing quad --no-clip-sample \\\n"
                 "      --inception-weights weights-inception-2015-12-05-6726825d.pth \\\n"
                 "      --out eval-cifar10")
    p.add_argument("--model", required=True, help=MODEL_HELP + ", or paper:NAME (random weights)")
    p.add_argument("--reference", help="the model to compare samples with by SSIM (same forms as --model)")
    p.add_argument("--data", required=True, help="FID reference " + DATA_HELP)
    p.add_argument("--n", type=int, required=True, help="samples for FID and SSIM, at least 2")
    p.add_argument("--seed", type=int, required=True, help="seed of x_T, shared by --model and --reference")
    p.add_argument("--steps", type=int, default=100, help="DDIM steps, eta 0 (default 100, as the paper)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--inception-weights",
                   help=f"torch-fidelity's Inception-v3 weights file ({INCEPTION_WEIGHTS_URL}, checked by sha256); "
                        "the paper's FID. The file is a pickle, read by torch-fidelity's own loader")
    p.add_argument("--fid-cache", default=str(CACHE_DIR),
                   help=f"folder of cached reference statistics (default {CACHE_DIR})")
    p.add_argument("--latency-batch-size", type=int, default=1, help="images per timed sampling run (default 1)")
    p.add_argument("--latency-repeats", type=int, default=3, help="timed runs, after one warm-up (default 3)")
    add_sampler_arguments(p)
    add_conditioning_arguments(p)
    p.add_argument("--out", required=True, help="new folder for report.json and grid.png")
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> dict:
    check_at_least(1, {"--batch-size": args.batch_size, "--latency-batch-size": args.latency_batch_size,
                       "--latency-repeats": args.latency_repeats})
    check_at_least(2, {"--n": args.n})
    check_ddim(args.steps)
    extractor = "digits" if args.inception_weights is None else "inception"
    extractor_arguments(extractor, args.inception_weights)
    labels, prompts = check_conditioning(args)
    check_output_dir(args.out)
    check_dataset(args.data)
    start = time.perf_counter()

    model = checkpoints.load_model(args.model)
    model_examples(model, args.data, limit=1)  # the FID reference must have the samples' channels: fail before sampling
    reference = None
    if args.reference is not None:
        reference = checkpoints.load_model(args.reference)
        if reference.image_shape != model.image_shape:
            raise InputError(f"--reference makes {' x '.join(map(str, reference.image_shape))} images, --model "
                             f"{' x '.join(map(str, model.image_shape))}: SSIM compares images of one shape")
    labels, prompts = repeated(labels, args.n), repeated(prompts, args.n)
    conditioning = model.conditions(args.n, labels=labels, prompts=prompts, seed=args.seed)[1]
    complexity = count_macs(model.unet, example_inputs(model, batch_size=1))
    guided = args.guidance_scale != 1
    latency = sampling_latency(model, batch_size=args.latency_batch_size, steps=args.steps,
                               repeats=args.latency_repeats)  # on the CPU, where load_model puts the model
    sample = partial(ddim_sample, n=args.n, seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                     labels=labels, prompts=prompts, guidance_scale=args.guidance_scale, **sampler_options(args))
    samples = sample(model.to(sampling_device()))
    report = {
        "command": "evaluate", "model": args.model, "pipeline": model.pipeline, "reference": args.reference,
        "data": args.data, "n": args.n, "seed": args.seed, "conditioning": conditioning,
        "guidance_scale": args.guidance_scale,
        "sampler": (f"DDIM, {args.steps} steps, eta 0, {args.spacing} spacing, "
                    f"x_0 {'clipped' if clips_x0(args, model) else 'not clipped'}"),
        "spacing": args.spacing, "clip_sample": clips_x0(args, model), "sampling_device": str(sampling_device()),
        "params": complexity["params"], "macs": complexity["macs"], "attention_macs": complexity["attention_macs"],
        "macs_with_attention": complexity["macs_with_attention"],
        "pipeline_complexity": pipeline_complexity(model, steps=args.steps, guidance=guided),
        "latency": latency,
        "fid": fid(samples, args.data, extractor=extractor, inception_weights=args.inception_weights,
                   cache_dir=args.fid_cache, batch_size=args.batch_size),
        "ssim_to_reference": (mean_ssim(samples, sample(reference.to(sampling_device())))
                              if reference is not None else None),
        "digits_classifier": classify_samples(samples) if model.image_shape == (1, 16, 16) else None,
    }
    report["wall_time_s"] = round(time.perf_counter() - start, 2)
    with atomic_dir(args.out) as tmp:
        save_grid(samples[:64], tmp / "grid.png")
        write_json(tmp / "report.json", report)
    return report


# ----------------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m diffprune_core", formatter_class=argparse.RawDescriptionHelpFormatter,
                    description="Prune, fine-tune, sample and evaluate diffusion U-Nets (Diff-Pruning, LD-Pruner).\n"
                                "Each command writes a new folder with a report.json; "
                                "see python -m diffprune_core COMMAND --help.",
                    epilog="a typical run on your own U-Net and images:\n"
                           "  python -m diffprune_core prune --model my_unet/ --criterion diff-pruning --ratio 0.3 \\\n"
                           "      --data folder:my_images --out pruned\n"
                           "  python -m diffprune_core finetune --model pruned --data folder:my_images --steps 20000 "
                           "--out ft\n"
                           "  python -m diffprune_core evaluate --model ft/model --reference my_unet/ "
                           "--data folder:my_images \\\n"
                           "      --n 1000 --seed 0 --out eval")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (add_prune_parser, add_finetune_parser, add_sample_parser, add_evaluate_parser):
        add(commands)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        report = args.run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if report is not None:  # None on the other processes of a distributed run
        print(_summary(report))
    return 0


def _summary(report: dict) -> str:
    """One line per entry, nested dicts flattened; the long lists stay in report.json."""
    lines = []
    for key, value in report.items():
        if isinstance(value, dict):
            lines += [f"{key}.{inner}: {item}" for inner, item in value.items() if not isinstance(item, list)]
        elif key not in ("timesteps_used", "operators_modified"):
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
