#!/usr/bin/env bash
# The main job until the book is complete: prune the embedded teacher with Diff-Pruning (the paper's
# CIFAR-10 setting: channel ratio 0.3, T = 0.05) and print the report. Output: results/main/pruned-teacher
# (replaced on every run; results/ is git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/main/pruned-teacher
rm -rf "$out"
.venv/bin/python -m diffprune_core prune --model data/teacher --criterion diff-pruning --ratio 0.3 \
    --threshold 0.05 --data digits --seed 0 --out "$out"
