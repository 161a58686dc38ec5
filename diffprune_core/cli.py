"""``python -m diffprune_core COMMAND``: the library's steps for a practitioner's own U-Net and images.

Every command validates its arguments before it loads anything, writes its outputs into a fresh
folder atomically (nothing is left behind on failure) with a JSON report beside them, and turns bad
input into a one-line ``error: ...`` with exit status 1.
"""
import argparse
import sys
import time

from . import checkpoints
from .architectures import example_inputs
from .complexity import count_macs
from .criteria import CRITERIA, GRADIENT_CRITERIA, StructureImportance, accumulate_gradients, check_criterion
from .errors import InputError
from .fileio import atomic_dir, check_output_dir, write_json
from .pruner import check_ratio, prune_unet, search_ratio_for_macs


def add_prune_parser(commands) -> None:
    p = commands.add_parser("prune", help="prune a diffusers U-Net (Diff-Pruning and baselines)",
                            description="Prune the channels of a diffusers U-Net with one importance criterion.")
    p.add_argument("--model", required=True,
                   help="hub id (google/ddpm-cifar10-32), local diffusers folder, pruned folder, or paper:NAME")
    p.add_argument("--criterion", required=True, help=f"one of {', '.join(CRITERIA)}")
    p.add_argument("--ratio", type=float, default=0.3, help="channel pruning ratio p in (0, 1) (default 0.3)")
    p.add_argument("--macs-reduction", type=float, default=None,
                   help="instead of --ratio: the fraction of MACs to remove, in (0, 1) (Table 4's convention)")
    p.add_argument("--threshold", type=float, default=0.05,
                   help="Diff-Pruning's T in [0, 1): timesteps with L_t/L_max <= T are dropped (default 0.05)")
    p.add_argument("--data", default="digits", help="images for the gradient criteria: digits, cifar10[:ROOT], folder:PATH")
    p.add_argument("--batch-size", type=int, default=64, help="clean images in the one batch of Algorithm 1 (default 64)")
    p.add_argument("--stride", type=int, default=1, help="visit every stride-th timestep (default 1: all)")
    p.add_argument("--round-to", type=int, default=None, help="round kept channels up as Torch-Pruning 1.x (LDM: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise, the batch and the random criterion")
    p.add_argument("--out", required=True, help="new folder for the weights, widths.json and report.json")
    p.set_defaults(run=run_prune)


def run_prune(args) -> dict:
    check_criterion(args.criterion)
    check_ratio(args.ratio)
    if args.macs_reduction is not None:
        check_ratio(args.macs_reduction, "--macs-reduction")
    if not 0.0 <= args.threshold < 1.0:
        raise InputError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.batch_size < 1 or args.stride < 1:
        raise InputError("--batch-size and --stride must be positive")
    check_output_dir(args.out)
    start = time.perf_counter()

    model = checkpoints.load_unet(args.model)
    inputs = example_inputs(model)
    before = count_macs(model, inputs)
    ratio = args.ratio
    if args.macs_reduction is not None:
        ratio = search_ratio_for_macs(model, args.macs_reduction, inputs)
    gradients = None
    if args.criterion in GRADIENT_CRITERIA:
        gradients = _accumulate(model, args)
    prune_unet(model, StructureImportance(args.criterion, seed=args.seed), ratio=ratio, inputs=inputs,
               round_to=args.round_to)
    model.zero_grad(set_to_none=True)
    after = count_macs(model, inputs)
    report = {
        "command": "prune", "model": args.model, "criterion": args.criterion, "ratio": ratio,
        "macs_reduction_target": args.macs_reduction,
        "threshold": args.threshold if args.criterion == "diff-pruning" else None,
        "timesteps_used": gradients.timesteps_used if gradients else [],
        "num_timesteps_used": len(gradients.timesteps_used) if gradients else 0,
        "data": args.data if gradients else None, "seed": args.seed,
        "params_before": before["params"], "params_after": after["params"],
        "macs_before": before["macs"], "macs_after": after["macs"],
        "macs_with_attention_before": before["macs_with_attention"],
        "macs_with_attention_after": after["macs_with_attention"],
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    with atomic_dir(args.out) as tmp:
        checkpoints.write_unet(model, tmp)
        write_json(tmp / "report.json", report)
    return report


def _accumulate(model, args):
    """Algorithm 1's gradient pass on one batch of ``args.data`` at the model's size."""
    from diffusers import UNet2DConditionModel

    from .data import load_images
    from .sampling import noise_scheduler

    if isinstance(model, UNet2DConditionModel):
        raise InputError("gradient criteria on a conditional U-Net need its conditioning: use the library API")
    size = model.config.sample_size
    images = load_images(args.data, image_size=size if isinstance(size, int) else size[0],
                         channels=model.config.in_channels, limit=args.batch_size, seed=args.seed)
    threshold = args.threshold if args.criterion == "diff-pruning" else 0.0
    return accumulate_gradients(model, images, noise_scheduler().alphas_cumprod, threshold=threshold,
                                stride=args.stride, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffprune_core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_prune_parser(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = args.run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(_summary(report))
    return 0


def _summary(report: dict) -> str:
    lines = [f"{key}: {value}" for key, value in report.items() if key != "timesteps_used"]
    return "\n".join(lines)
