"""Measured speed-up of the paper's four U-Nets pruned at ratio 0.3 (issue 12, items 2 and 3).

Random weights (the time does not depend on them). For each U-Net: the MACs ratio of the pruned model to the
dense one beside the measured ratio of their times, for one U-Net forward at a few batch sizes and (at ratio
0.3) for one full DDIM sampling (``--ddim-steps``, batch 1), with the paper's widths and with every width rounded to a multiple of
``--multiple-of`` (``pruner.Widths``); for the CIFAR-10 U-Net also at Table 4's MACs targets. Times are taken in
alternation, dense and pruned, and the ratio is the median over rounds with its range (``metrics.timed_against``).
On a CPU the allocator counts too: prefix the command with ``tools/build_book.sh``'s ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` to time as the book does (the first printed line says which, ``metrics.allocator``).

    .venv/bin/python benchmarks/architecture_speed.py [--models cifar10-32 ...] [--batch-sizes 1 8]
        [--repeats 3] [--ddim cifar10-32] [--device cuda] [--out results/benchmarks/architecture_speed.csv]
"""
import argparse
import copy
from pathlib import Path

import pandas as pd
import torch

from diffprune_core.architectures import build_paper_unet, example_inputs, paper_unet_configs
from diffprune_core.criteria import StructureImportance
from diffprune_core.metrics import allocator, forward_speedups, relative_latencies
from diffprune_core.paper import paper_rows
from diffprune_core.pipeline import DiffusionModel
from diffprune_core.pruner import paper_widths, prune_unet, search_ratio_for_macs


def pruned_variants(dense, name: str, multiple_of: int) -> dict:
    """{label: pruned copy}: ratio 0.3 with the paper's and with rounded widths; CIFAR-10 at Table 4's targets."""
    inputs = example_inputs(dense)
    targets = {"ratio 0.3": 0.3}
    if name == "cifar10-32":
        for reduction in sorted(set(paper_rows(source="diff-pruning", table=4)["ratio"]) - {0.0}):  # MACs targets
            targets[f"MACs -{reduction:.0%}"] = search_ratio_for_macs(dense, reduction, inputs)
    variants = {}
    for label, ratio in targets.items():
        for suffix, widths in (("", paper_widths(dense)),
                               (f", x{multiple_of}", paper_widths(dense, multiple_of=multiple_of))):
            variants[label + suffix] = prune_unet(copy.deepcopy(dense), StructureImportance("magnitude"), ratio=ratio,
                                                  inputs=inputs, widths=widths)
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(paper_unet_configs()), help="paper U-Nets (default: all)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8], help="forward batch sizes (default 1 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after a warm-up round (default 3)")
    parser.add_argument("--multiple-of", type=int, default=8, help="the rounded widths' multiple (default 8)")
    parser.add_argument("--ddim", nargs="*", default=["cifar10-32"], help="U-Nets also timed over a full DDIM sampling")
    parser.add_argument("--ddim-steps", type=int, default=100, help="DDIM steps of that sampling (default 100)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", default=None, help="also write the rows to this CSV")
    args = parser.parse_args()
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.repeats} rounds after a warm-up, {allocator()}")
    rows = []
    for name in args.models:
        dense = build_paper_unet(name)
        variants = pruned_variants(dense, name, args.multiple_of)
        dense.to(args.device)
        for unet in variants.values():
            unet.to(args.device)
        for row in forward_speedups(dense, variants, batch_sizes=args.batch_sizes, repeats=args.repeats):
            rows.append({"U-Net": name, "measured": "forward", **row})
            print(rows[-1], flush=True)
        if name in args.ddim:
            macs_ratio = {row["variant"]: row["macs_ratio"] for row in rows if row["U-Net"] == name}
            timed = relative_latencies({label: DiffusionModel(unet=unet) for label, unet in variants.items()
                                        if label.startswith("ratio")}, DiffusionModel(unet=dense), batch_size=1,
                                       steps=args.ddim_steps, repeats=args.repeats)
            for label, result in timed.items():
                rows.append({"U-Net": name, "measured": f"DDIM {args.ddim_steps} steps", "variant": label,
                             "batch_size": 1, "macs_ratio": macs_ratio[label], "time_ratio": result["fraction"],
                             "time_ratio_low": result["fraction_low"], "time_ratio_high": result["fraction_high"],
                             "seconds": result["seconds"], "dense_seconds": result["reference_seconds"],
                             "repeats": args.repeats, "device": args.device, "torch_threads": torch.get_num_threads()})
                print(rows[-1], flush=True)
        del dense, variants
    table = pd.DataFrame(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    print(table[["U-Net", "measured", "variant", "batch_size", "macs_ratio", "time_ratio", "time_ratio_low",
                 "time_ratio_high"]].to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
