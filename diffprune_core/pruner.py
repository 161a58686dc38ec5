"""Structural channel pruning of diffusers U-Nets with Torch-Pruning's dependency graph.

Torch-Pruning finds which layers share a channel (a *group*); this module decides how many channels
each group loses and which, then fixes the attributes diffusers caches from the old widths.

How many (the paper's rounding, Torch-Pruning <= 1.4.0): a group of width n keeps int(n * (1 - p))
channels, so it loses m = n - int(n * (1 - p)). If the group feeds a GroupNorm of G groups, or is
the query/key/value dimension of an attention with H heads, the m channels are spread evenly,
m // G (or m // H) inside every GroupNorm group (head), chosen there by lowest importance. This is
why the CIFAR-10 U-Net at p = 0.3 goes 128 -> 96 and 256 -> 192 (35.7M -> 19.8M, Table 1):
Torch-Pruning 1.4.1+ rounds differently and gives 13.95M. Attention q/k/v with one head go
256 -> 179, the time embedding 512 -> 358; ``conv_out`` keeps its output channels.
"""
import copy
import math

import torch
import torch_pruning as tp
from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .complexity import count_macs
from .criteria import GRADIENT_CRITERIA, GradientReport, StructureImportance, accumulate_gradients, check_criterion
from .errors import InputError


def check_ratio(ratio: float, name: str = "ratio") -> float:
    if not 0.0 < ratio < 1.0:
        raise InputError(f"{name} must be in (0, 1), got {ratio}")
    return ratio


def channels_to_remove(width: int, ratio: float, divisions: int = 1, round_to: int | None = None) -> int:
    """Channels removed from each of ``divisions`` equal parts of a width-``width`` group (see module doc).

    ``round_to`` (the official LDM script used 2) rounds the kept count up as Torch-Pruning 1.x did:
    keep + (round_to - keep % round_to), a full ``round_to`` more when keep is already a multiple.
    """
    keep = int(width * (1 - ratio))
    if round_to:
        keep += round_to - keep % round_to
    return max(width - keep, 0) // divisions


def group_divisions(group) -> int:
    """How many equal parts a group's channels fall into: GroupNorm groups or attention heads (their lcm)."""
    divisions = 1
    for item in group:
        layer, fn = item.dep.target.module, getattr(item.dep.handler, "__name__", "")
        if isinstance(layer, nn.GroupNorm):
            divisions = math.lcm(divisions, layer.num_groups)
        elif fn == "prune_out_channels" and isinstance(layer, nn.Linear) and hasattr(layer, "_attention_heads"):
            divisions = math.lcm(divisions, layer._attention_heads)
    return divisions


def select_channels(scores: torch.Tensor, ratio: float, divisions: int, round_to: int | None = None) -> list:
    """The lowest-scoring channels to remove, the same number inside each of ``divisions`` parts."""
    width = len(scores)
    per_part = channels_to_remove(width, ratio, divisions, round_to)
    size = width // divisions
    chosen = [torch.argsort(scores[d * size:(d + 1) * size], stable=True)[:per_part] + d * size
              for d in range(divisions)]
    return sorted(torch.cat(chosen).tolist())


def prune_unet(model, importance, *, ratio: float, inputs: dict, round_to: int | None = None, ignored_layers=()):
    """Prune every channel group of a diffusers U-Net in place at channel ratio ``ratio``.

    ``importance`` maps a Torch-Pruning group to one score per channel (criteria.StructureImportance).
    ``conv_out`` (the predicted noise) is never pruned on its output side. Returns the model.
    """
    check_ratio(ratio)
    for attn in model.modules():  # mark q/k/v so that group_divisions sees the heads
        if isinstance(attn, Attention):
            for linear in (attn.to_q, attn.to_k, attn.to_v):
                linear._attention_heads = attn.heads
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs)
    ignored = [model.conv_out, *ignored_layers]
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        root, fn = group[0].dep.target.module, group[0].dep.handler
        width = len(group[0].idxs)
        idxs = select_channels(importance(group), ratio, group_divisions(group), round_to)
        if idxs and len(idxs) < width:
            pruning = graph.get_pruning_group(root, fn, idxs)
            if graph.check_pruning_group(pruning):
                pruning.prune()
    for module in model.modules():
        if hasattr(module, "_attention_heads"):
            del module._attention_heads
    fix_stale_attributes(model)
    return model


def fix_stale_attributes(model) -> None:
    """Re-derive the widths diffusers caches in plain attributes from the (pruned) layers.

    Up/Downsample2D check ``channels`` in forward; Attention keeps ``inner_dim`` and friends and a
    ``scale`` of head_dim^-0.5, which is set to the new head size so that the classic and the SDPA
    attention processors (SDPA derives the scale from the tensor) agree, and so that a model rebuilt
    from the saved widths is the same function.
    """
    for module in model.modules():
        if isinstance(module, (Upsample2D, Downsample2D)) and getattr(module, "conv", None) is not None:
            module.channels = module.conv.in_channels
            module.out_channels = module.conv.out_channels
        elif isinstance(module, ResnetBlock2D):
            module.in_channels = module.conv1.in_channels
            module.out_channels = module.conv2.out_channels
        elif isinstance(module, Attention):
            module.query_dim = module.to_q.in_features
            module.inner_dim = module.to_q.out_features
            module.inner_kv_dim = module.to_k.out_features
            module.out_dim = module.to_out[0].out_features
            if module.scale_qk:
                module.scale = (module.inner_dim // module.heads) ** -0.5


def search_ratio_for_macs(model, macs_reduction: float, inputs: dict, *, tolerance: float = 1e-3) -> float:
    """The channel ratio whose pruned architecture removes the fraction of MACs closest to ``macs_reduction``.

    Table 4's convention. Widths depend on the ratio alone and change in steps (whole GroupNorm groups),
    so bisection on copies pruned with magnitude scores finds the step that crosses the target, and
    the ratio on whichever side of it lands closer is returned.
    """
    check_ratio(macs_reduction, "macs_reduction")
    dense = count_macs(model, inputs)["macs"]
    reductions = {0.0: 0.0}

    def reduction(ratio):
        if ratio not in reductions:
            pruned = prune_unet(copy.deepcopy(model), StructureImportance("magnitude"), ratio=ratio, inputs=inputs)
            reductions[ratio] = 1 - count_macs(pruned, inputs)["macs"] / dense
        return reductions[ratio]

    low, high = 0.0, 0.99
    while high - low > tolerance:
        mid = round((low + high) / 2, 6)
        low, high = (low, mid) if reduction(mid) >= macs_reduction else (mid, high)
    closer = min((low, high), key=lambda r: abs(reduction(r) - macs_reduction))
    if closer == 0.0:
        raise InputError(f"no channel ratio removes about {macs_reduction:.0%} of the MACs: the smallest step removes "
                         f"{reduction(high):.1%}")
    return closer


def prune(model, criterion: str, *, ratio: float | None = None, macs_reduction: float | None = None, images=None,
          alphas_cumprod=None, threshold: float = 0.0, stride: int = 1, max_steps: int | None = None,
          round_to: int | None = None, seed: int = 0, progress: bool = True,
          gradients: GradientReport | None = None) -> dict:
    """Algorithm 1 end to end: gradients over the pruned timesteps (for the Taylor criteria), then pruning.

    Exactly one of ``ratio`` (channels) and ``macs_reduction`` (Table 4) is given. ``threshold`` is T
    for ``diff-pruning``; ``taylor`` always uses every timestep. ``gradients``, if given, is the report of
    an :func:`accumulate_gradients` whose sums are already in ``param.grad`` (e.g. read back from a
    cache): the loop over timesteps is then skipped. Returns what was done: the ratio used and the
    timesteps whose gradients were summed.
    """
    check_criterion(criterion)
    if (ratio is None) == (macs_reduction is None):
        raise InputError("give exactly one of ratio and macs_reduction")
    from .architectures import example_inputs

    inputs = example_inputs(model)
    if macs_reduction is not None:
        ratio = search_ratio_for_macs(model, macs_reduction, inputs)
    check_ratio(ratio)
    report = gradients
    if criterion in GRADIENT_CRITERIA and report is None:
        if images is None or alphas_cumprod is None:
            raise InputError(f"criterion {criterion!r} needs a batch of images and the noise schedule")
        report = accumulate_gradients(model, images, alphas_cumprod, seed=seed, stride=stride, max_steps=max_steps,
                                      threshold=threshold if criterion == "diff-pruning" else 0.0, progress=progress)
    prune_unet(model, StructureImportance(criterion, seed=seed), ratio=ratio, inputs=inputs, round_to=round_to)
    model.zero_grad(set_to_none=True)
    return {"criterion": criterion, "ratio": ratio, "macs_reduction_target": macs_reduction,
            "threshold": threshold if criterion == "diff-pruning" else None,
            "timesteps_used": report.timesteps_used if report else [],
            "losses": report.losses if report else {}}
