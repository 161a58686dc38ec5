"""Algorithm 1 one timestep per forward/backward against several per forward (issue 12, item 1).

For the digits teacher (its real batch of Algorithm 1) and the paper's CIFAR-10 U-Net (random weights and
images: the time does not depend on them), the same timesteps are visited both ways in alternation
(``metrics.alternated``); printed: each side's median seconds, their ratio (median and range over the rounds),
and whether the two agree: the same timesteps, the largest relative difference of the gradient sums, and the
share of the channels that pruning at ratio 0.3 removes alike.

    .venv/bin/python benchmarks/algorithm1_chunks.py [--repeats 3] [--timesteps 48] [--device cuda]
"""
import argparse
import copy

import torch

from diffprune_core.architectures import build_paper_unet, example_inputs
from diffprune_core.criteria import (StructureImportance, accumulate_gradients, default_timesteps_per_forward,
                                     fixed_noise)
from diffprune_core.experiments import RunSpec, algorithm1_examples, load_teacher
from diffprune_core.metrics import alternated, seconds_of
from diffprune_core.pipeline import as_diffusion_model
from diffprune_core.pruner import prune_unet


def models(cifar_batch: int):
    """(name, model, Algorithm 1's batch) for each benchmarked model."""
    spec = RunSpec()
    teacher, examples = load_teacher(spec)
    yield "digits teacher", teacher, algorithm1_examples(examples, spec).images
    images = torch.rand(cifar_batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    yield "cifar10-32 (random weights)", as_diffusion_model(build_paper_unet("cifar10-32")), images


def sums(model, images, timesteps: int, per_forward):
    report = accumulate_gradients(model, images, max_steps=timesteps, timesteps_per_forward=per_forward, progress=False)
    return report, {name: p.grad.clone() for name, p in model.unet.named_parameters()}


def chunk_of(model, images) -> int:
    """What accumulate_gradients chooses by default for this model and batch."""
    x0 = model.encode(images).to(model.device)
    return default_timesteps_per_forward(model.unet, x0, fixed_noise(x0, 0), model.schedule.alphas_cumprod, {})


def removed_alike(model, a: dict, b: dict) -> float:
    """Share of the channels removed at ratio 0.3 with the sums ``a`` that are removed with the sums ``b`` too."""
    removed = []
    for grads in (a, b):
        pruned = copy.deepcopy(model)
        for name, p in pruned.unet.named_parameters():
            p.grad = grads[name]
        removed.append({})
        prune_unet(pruned.unet, StructureImportance("diff-pruning"), ratio=0.3, inputs=example_inputs(pruned),
                   removed=removed[-1])
    shared = sum(len(set(idxs) & set(removed[1][layer][1])) for layer, (_, idxs) in removed[0].items())
    return shared / sum(len(idxs) for _, idxs in removed[0].values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round (default 3)")
    parser.add_argument("--timesteps", type=int, default=48, help="timesteps of Algorithm 1 per pass (default 48)")
    parser.add_argument("--cifar-batch", type=int, default=16, help="images in the CIFAR-10 U-Net's batch (default 16)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.timesteps} timesteps a pass, {args.repeats} rounds after a warm-up\n")
    print("| model | batch | timesteps a forward | loop s | chunked s | speed-up (range) | same timesteps | "
          "max rel. diff of sums | "
          "channels removed alike |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, model, images in models(args.cifar_batch):
        model.to(args.device)
        images = images.to(args.device)
        timed = alternated(seconds_of(lambda: sums(model, images, args.timesteps, 1)),
                           seconds_of(lambda: sums(model, images, args.timesteps, None)), repeats=args.repeats)
        (loop, a), (chunked, b) = sums(model, images, args.timesteps, 1), sums(model, images, args.timesteps, None)
        difference = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-30)).item() for k in a)
        print(f"| {name} | {len(images)} | {chunk_of(model, images)} | {timed['seconds']:.1f} | "
              f"{timed['reference_seconds']:.1f} | "
              f"{timed['ratio']:.2f}x ({timed['ratio_low']:.2f}-{timed['ratio_high']:.2f}) | "
              f"{loop.timesteps_used == chunked.timesteps_used} | {difference:.1e} | "
              f"{removed_alike(model.to('cpu'), a, b):.1%} |", flush=True)


if __name__ == "__main__":
    main()
