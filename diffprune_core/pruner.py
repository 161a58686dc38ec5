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

Beyond the paper's shapes, every block diffusers' U-Nets are built from (:data:`TESTED_BLOCKS`; a test
prunes and reloads each): a group is re-rooted at its narrowest layer (:func:`channel_root`) so that a
projection chunked into two halves (``resnet_time_scale_shift="scale_shift"``, AdaGroupNorm, GEGLU's
feed-forward) counts each channel once (or, with ``chunk_count="outputs"``, as Torch-Pruning 1.x did);
AdaGroupNorm's groups divide like GroupNorm's; widths that are an interface of the model (the time
embedding under ``class_embed_type="identity"``, ``time_cond_proj_dim``'s projection) are not pruned.
A U-Net with any other block is refused before pruning.

:class:`Widths` changes the rounding: Torch-Pruning 1.x's ``round_to`` (the LDM widths of Table 3), or
``multiple_of`` N, every kept width the nearest multiple of N that the GroupNorm groups and heads allow
(179 -> 176, 358 -> 360 at N = 8), for kernels that run faster on such widths.
"""
import copy
import math
import time
from dataclasses import dataclass

import torch
import torch_pruning as tp
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from diffusers.models.normalization import AdaGroupNorm
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .complexity import count_macs
from .criteria import (GRADIENT_CRITERIA, GradientReport, StructureImportance, accumulate_gradients, check_criterion,
                       check_score_form)
from .errors import InputError
from .pipeline import as_diffusion_model


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
        elif fn == "prune_out_channels" and hasattr(layer, "_norm_groups"):  # AdaGroupNorm's linear
            divisions = math.lcm(divisions, layer._norm_groups)
    return divisions


def channel_root(graph, group):
    """The same group rooted at its narrowest conv/linear (pruned on its outputs or its inputs) that covers
    all its own channels.

    A root such as ``time_emb_proj`` under scale_shift (2C outputs chunked into scale and shift for C
    channels), GEGLU's projection in a transformer block's feed-forward (2C outputs, a value and a gate
    for each of the C inputs of its output linear), or a path that reaches a channel twice through a
    concatenation, names each channel several times; counting m = n - int(n (1 - p)) removals there would remove the wrong number, unevenly
    across GroupNorm groups. Rooted at a layer with one index per channel, the scores of the other
    layers still add up through ``root_idxs``.
    """
    root, fn = group[0].dep.target.module, group[0].dep.handler
    width = len(group[0].idxs)
    for item in group:
        layer, handler = item.dep.target.module, item.dep.handler
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        if graph.is_out_channel_pruning_fn(handler):
            n = graph.get_out_channels(layer)
        elif graph.is_in_channel_pruning_fn(handler):  # e.g. GEGLU's output linear: C inputs for 2C projections
            n = graph.get_in_channels(layer)
        else:
            continue
        if n < width and len(set(item.idxs)) == n:
            root, fn, width = layer, handler, n
    if root is group[0].dep.target.module:
        return group
    return graph.get_pruning_group(root, fn, list(range(width)))


CHUNK_COUNTS = {
    "channels": "a group reached through a projection into two halves (GEGLU's value and gate, scale_shift's "
                "scale and shift) keeps int(C (1 - p)) of its C channels, like every other group",
    "outputs": "Torch-Pruning 1.x's count, behind the paper's LDM widths: such a group counts the projection's "
               "2C outputs, so it loses 2C - int(2C (1 - p)) channels, about twice the ratio",
}


@dataclass(frozen=True, kw_only=True)
class Widths:
    """How many channels a group keeps at a ratio, beyond the paper's rounding (module doc)."""
    round_to: int | None = None  # keep + (round_to - keep % round_to), as Torch-Pruning 1.x (official LDM script: 2)
    multiple_of: int | None = None  # every kept width the nearest multiple of this the GroupNorm groups and heads
    # allow (8: what the hardware's kernels like; issue 12)
    chunk_count: str = "channels"  # how a group reached through a projection into two halves counts (CHUNK_COUNTS)

    def __post_init__(self):
        if self.chunk_count not in CHUNK_COUNTS:
            raise InputError(f"unknown chunk_count {self.chunk_count!r}; choose from {', '.join(CHUNK_COUNTS)}")
        for name in ("round_to", "multiple_of"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive number of channels, got {getattr(self, name)}")

    def removed_per_part(self, width: int, ratio: float, divisions: int, counted: int | None = None) -> int:
        """Channels removed from each of ``divisions`` equal parts of a width-``width`` group, at most all but one;
        ``counted`` is the width the ratio applies to (CHUNK_COUNTS), default ``width``."""
        size = width // divisions
        per_part = channels_to_remove(counted or width, ratio, divisions, self.round_to)
        if self.multiple_of:  # kept = divisions * kept per part: the kept per part moves in steps of `step`
            step = self.multiple_of // math.gcd(self.multiple_of, divisions)
            if size >= step:
                kept = min(max(step, step * math.floor((size - per_part) / step + 0.5)), size - size % step)
                per_part = size - kept
        return min(per_part, size - 1)


def paper_widths(unet, *, ldm_round_to: int | None = 2, ldm_chunk_count: str = "outputs",
                 multiple_of: int | None = None) -> Widths:
    """The widths behind the paper's tables: its rounding for the DDPMs (UNet2DModel); for the LDM
    (UNet2DConditionModel) as the official script pruned it, ``round_to`` 2 and the GEGLU feed-forward counted in
    outputs (Tables 2-3 chapter); each then rounded to the nearest ``multiple_of`` if given."""
    if isinstance(unet, UNet2DConditionModel):
        return Widths(round_to=ldm_round_to, chunk_count=ldm_chunk_count, multiple_of=multiple_of)
    return Widths(multiple_of=multiple_of)


def select_channels(scores: torch.Tensor, ratio: float, divisions: int, widths: Widths = Widths(),
                    counted: int | None = None) -> list:
    """The lowest-scoring channels to remove, :meth:`Widths.removed_per_part` inside each of ``divisions`` parts."""
    size = len(scores) // divisions
    per_part = widths.removed_per_part(len(scores), ratio, divisions, counted)
    chosen = [torch.argsort(scores[d * size:(d + 1) * size], stable=True)[:per_part] + d * size
              for d in range(divisions)]
    return sorted(torch.cat(chosen).tolist())


def prune_unet(model, importance, *, ratio: float, inputs: dict, widths: Widths = Widths(), ignored_layers=(),
               removed: dict | None = None):
    """Prune every channel group of a diffusers U-Net in place at channel ratio ``ratio``.

    ``importance`` maps a Torch-Pruning group to one score per channel (criteria.StructureImportance).
    ``conv_out`` (the predicted noise) is never pruned on its output side. ``widths`` says how many channels a
    group keeps (the paper's rounding by default). ``removed``, if given,
    is filled with {name of the group's root layer: (its width, the channel indices removed)}. Returns the model.
    """
    check_ratio(ratio)
    check_prunable(model)
    for module in model.modules():  # mark the layers whose channels split into heads or norm groups
        if isinstance(module, Attention):
            for linear in (module.to_q, module.to_k, module.to_v):
                linear._attention_heads = module.heads
        elif isinstance(module, AdaGroupNorm):
            module.linear._norm_groups = module.num_groups
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs)
    names = {module: name for name, module in model.named_modules()}
    ignored = [model.conv_out, *interface_layers(model), *ignored_layers]
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        outputs = len(group[0].idxs)
        group = channel_root(graph, group)
        root, fn = group[0].dep.target.module, group[0].dep.handler
        width = len(group[0].idxs)
        counted = outputs if widths.chunk_count == "outputs" and outputs == 2 * width else width
        idxs = select_channels(importance(group), ratio, group_divisions(group), widths, counted)
        if idxs and len(idxs) < width:
            pruning = graph.get_pruning_group(root, fn, idxs)
            if graph.check_pruning_group(pruning):
                pruning.prune()
                if removed is not None:
                    removed[names[root]] = (width, idxs)
    for module in model.modules():
        for mark in ("_attention_heads", "_norm_groups"):
            if hasattr(module, mark):
                delattr(module, mark)
    fix_stale_attributes(model)
    return model


def interface_layers(model) -> list:
    """Layers whose output width callers feed from outside: class vectors of class_embed_type 'identity' are
    added to the time embedding, and time_cond_proj_dim's projection is added to the sinusoidal timestep."""
    layers = []
    if model.config.get("class_embed_type") == "identity":
        layers.append(model.time_embedding.linear_2)
    if getattr(model.time_embedding, "cond_proj", None) is not None:
        layers.append(model.time_embedding.cond_proj)
    return layers


TESTED_BLOCKS = {
    "DownBlock2D", "ResnetDownsampleBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D",
    "SkipDownBlock2D", "AttnSkipDownBlock2D", "KDownBlock2D", "KCrossAttnDownBlock2D",
    "UpBlock2D", "ResnetUpsampleBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D", "SimpleCrossAttnUpBlock2D",
    "SkipUpBlock2D", "AttnSkipUpBlock2D", "KUpBlock2D", "KCrossAttnUpBlock2D",
    "UNetMidBlock2D", "UNetMidBlock2DCrossAttn", "UNetMidBlock2DSimpleCrossAttn",
}


def check_prunable(unet) -> None:
    """Refuse, before any pruning, a U-Net with a block diffprune has not been tested with (one line naming it)."""
    for name, block in [*((f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)),
                        ("mid_block", unet.mid_block), *((f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks))]:
        if block is not None and type(block).__name__ not in TESTED_BLOCKS:
            raise InputError(f"{name} is a {type(block).__name__}, which diffprune cannot prune soundly "
                             "(it prunes the blocks diffusers' UNet2DModel and UNet2DConditionModel are built from)")


def fix_stale_attributes(model) -> None:
    """Re-derive the widths diffusers caches in plain attributes from the (pruned) layers.

    Up/Downsample2D check ``channels`` in forward (those inside a ResnetBlock2D with up/down=True pool or
    interpolate without a conv, and take the resnet's width); Attention keeps ``inner_dim`` and friends and a
    ``scale`` of head_dim^-0.5, which is set to the new head size so that the classic and the SDPA
    attention processors (SDPA derives the scale from the tensor) agree, and so that a model rebuilt
    from the saved widths is the same function.
    """
    for module in model.modules():
        if isinstance(module, (Upsample2D, Downsample2D)) and isinstance(getattr(module, "conv", None), nn.Conv2d):
            module.channels = module.conv.in_channels
            module.out_channels = module.conv.out_channels
        elif isinstance(module, ResnetBlock2D):
            module.in_channels = module.conv1.in_channels
            module.out_channels = module.conv2.out_channels
            for resample in (module.upsample, module.downsample):  # up=True / down=True: no conv of their own
                if isinstance(resample, (Upsample2D, Downsample2D)) and not isinstance(resample.conv, nn.Conv2d):
                    resample.channels = resample.out_channels = module.norm1.num_channels
        elif isinstance(module, Attention):
            module.query_dim = module.to_q.in_features
            module.inner_dim = module.to_q.out_features
            module.inner_kv_dim = module.to_k.out_features
            module.out_dim = module.to_out[0].out_features
            if module.scale_qk:
                module.scale = (module.inner_dim // module.heads) ** -0.5


def architecture_counts(unet, inputs: dict, *, ratio: float, widths: Widths = Widths()) -> dict:
    """One row of the architecture tables: #Params (M) and MACs (G) of ``unet`` before and after pruning it in
    place at ``ratio`` (magnitude scores: the widths depend on the ratio alone), and the pruning's seconds."""
    dense = count_macs(unet, inputs)
    start = time.perf_counter()
    prune_unet(unet, StructureImportance("magnitude"), ratio=ratio, inputs=inputs, widths=widths)
    seconds = time.perf_counter() - start
    pruned = count_macs(unet, inputs)
    return {"params_M": dense["params"] / 1e6, "pruned_params_M": pruned["params"] / 1e6,
            "macs_G": dense["macs"] / 1e9, "pruned_macs_G": pruned["macs"] / 1e9,
            "macs_with_attention_G": dense["macs_with_attention"] / 1e9,
            "pruned_macs_with_attention_G": pruned["macs_with_attention"] / 1e9, "prune_seconds": seconds}


def search_ratio_for_macs(model, macs_reduction: float, inputs: dict, *, tolerance: float = 1e-3,
                          widths: Widths = Widths()) -> float:
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
            pruned = prune_unet(copy.deepcopy(model), StructureImportance("magnitude"), ratio=ratio, inputs=inputs,
                                widths=widths)
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
          widths: Widths = Widths(), seed: int = 0, progress: bool = True, gradients: GradientReport | None = None,
          labels=None, prompts=None, score_form: str = "equation", timesteps_per_forward: int | None = None) -> dict:
    """Algorithm 1 end to end: gradients over the pruned timesteps (for the Taylor criteria), then pruning.

    Exactly one of ``ratio`` (channels) and ``macs_reduction`` (Table 4) is given. ``threshold`` is T
    for ``diff-pruning``; ``taylor`` always uses every timestep. ``score_form`` is the paper's equations or the
    released code's scores (criteria.SCORE_FORMS). ``gradients``, if given, is the report of
    an :func:`accumulate_gradients` whose sums are already in ``param.grad`` (e.g. read back from a
    cache): the loop over timesteps is then skipped. Returns what was done: the ratio used and the
    timesteps whose gradients were summed. ``model`` is a DiffusionModel (or a bare U-Net); its U-Net is
    pruned in place. A latent model's ``images`` are encoded; ``labels`` / ``prompts`` condition the batch;
    ``timesteps_per_forward`` is Algorithm 1's chunk (default: from memory, see :func:`accumulate_gradients`).
    """
    check_criterion(criterion)
    check_score_form(score_form)
    if (ratio is None) == (macs_reduction is None):
        raise InputError("give exactly one of ratio and macs_reduction")
    from .architectures import example_inputs

    model = as_diffusion_model(model)
    check_prunable(model.unet)
    inputs = example_inputs(model)
    if macs_reduction is not None:
        ratio = search_ratio_for_macs(model.unet, macs_reduction, inputs, widths=widths)
    check_ratio(ratio)
    report = gradients
    if criterion in GRADIENT_CRITERIA and report is None:
        if images is None:
            raise InputError(f"criterion {criterion!r} needs a batch of images")
        report = accumulate_gradients(model, images, alphas_cumprod, seed=seed, stride=stride, max_steps=max_steps,
                                      threshold=threshold if criterion == "diff-pruning" else 0.0, progress=progress,
                                      labels=labels, prompts=prompts, timesteps_per_forward=timesteps_per_forward)
    prune_unet(model.unet, StructureImportance(criterion, seed=seed, score_form=score_form), ratio=ratio, inputs=inputs,
               widths=widths)
    model.unet.zero_grad(set_to_none=True)
    return {"criterion": criterion, "score_form": score_form, "ratio": ratio,
            "macs_reduction_target": macs_reduction,
            "threshold": threshold if criterion == "diff-pruning" else None,
            "timesteps_used": report.timesteps_used if report else [],
            "losses": report.losses if report else {}}
