"""LD-Pruner (Castells et al., CVPR'24 EDGE): score whole operators of a U-Net by how much the outputs move.

An *operator* is a ResnetBlock2D (ResnetBlockCondNorm2D in the k-upscaler's K*Block2D) or an attention
block (Attention in Attn*Block2D and UNetMidBlock2D, Transformer2DModel in CrossAttn*Block2D, KAttentionBlock)
of the down, mid or up path, named by its dotted module path
(``down_blocks.1.attentions.0``). Each operator has modifications that keep the U-Net's shapes:

- ``remove``: the block becomes an identity. Offered where input and output shapes agree: every
  attention block (each holds its own residual) and every ResnetBlock2D that keeps its channel count.
- ``replace``: a ResnetBlock2D that changes the channel count (the first of a down block whose width
  grows, every up-path resnet, which reads the concatenated skip) becomes the 1x1 convolution of its
  own shortcut, a copy of ``conv_shortcut``: the block with its residual branch dropped, as ``remove``
  is for the others. Skip connections are untouched, so the up blocks concatenate as before.
  (``output_scale_factor``, 1 in all the paper's U-Nets, is dropped with the branch.)

The score of one modification (the paper's formula): with N_gen outputs of the original and of the
modified model generated from the same noise, avg and std (population std, so N_gen = 1 works) taken
per element across the N_gen samples,

    score = ||avg_orig - avg_mod||_2 + ||std_orig - std_mod||_2.

The lowest scores are pruned first, keeping every remaining weight. The modifications applied are
recorded on the model as ``model.diffprune_modifications`` ([name, modification] pairs), so that a
checkpoint can re-apply them on a freshly built base model before loading its weights.
:func:`ld_prune` does all of it for any :class:`pipeline.DiffusionModel` (:func:`ld_scores` the scoring
alone), generating the N_gen outputs by DDIM with the model's default conditions (class labels drawn from the
seed, the empty prompt): the U-Net's own outputs, that is *latents* for a latent model (the document's setting),
images otherwise.
"""
import copy
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import zip_longest

import pandas as pd
import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.resnet import ResnetBlock2D, ResnetBlockCondNorm2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_2d_blocks import KAttentionBlock
from torch import nn

from .architectures import example_inputs
from .complexity import count_macs, count_params
from .errors import InputError
from .pipeline import as_diffusion_model
from .progress import bar
from .pruner import check_ratio
from .sampling import ddim_sample

OPERATOR_KINDS = {ResnetBlock2D: "resnet", ResnetBlockCondNorm2D: "resnet", Attention: "attention",
                  KAttentionBlock: "attention", Transformer2DModel: "transformer"}
MODIFICATIONS = ("remove", "replace")


@dataclass(frozen=True, kw_only=True)
class Operator:
    """One LD-Pruner operator: its dotted module name, kind (resnet/attention/transformer), valid modifications."""
    name: str
    kind: str
    modifications: tuple

    @property
    def path(self) -> str:
        """'down', 'mid' or 'up'."""
        return self.name.split("_", 1)[0]


class RemovedBlock(nn.Module):
    """A removed operator: returns its input, called like the block it stands for.

    Transformer2DModel is called with ``return_dict=False`` and indexed ``[0]``, so it returns a tuple there.
    """

    def __init__(self, *, returns_tuple: bool):
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states, *args, return_dict: bool = True, **kwargs):
        if not self.returns_tuple:
            return hidden_states
        return Transformer2DModelOutput(sample=hidden_states) if return_dict else (hidden_states,)


class ChannelProjection(nn.Module):
    """A 1x1 convolution standing for a channel-changing ResnetBlock2D, called as ``resnet(hidden_states, temb)``."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, hidden_states, temb=None):
        return self.conv(hidden_states)


def unet_blocks(model) -> list:
    """(dotted name, block) of the down, mid and up blocks, in forward order."""
    blocks = [(f"down_blocks.{i}", block) for i, block in enumerate(model.down_blocks)]
    if model.mid_block is not None:
        blocks.append(("mid_block", model.mid_block))
    return blocks + [(f"up_blocks.{i}", block) for i, block in enumerate(model.up_blocks)]


def valid_modifications(module) -> tuple:
    if OPERATOR_KINDS[type(module)] == "resnet" and module.conv1.in_channels != module.conv2.out_channels:
        return ("replace",)
    return ("remove",)


def enumerate_operators(model) -> list[Operator]:
    """Every not yet modified resnet and attention block of a UNet2DModel / UNet2DConditionModel, in forward order."""
    operators = []
    for block_name, block in unet_blocks(model):
        for j, pair in enumerate(zip_longest(block.resnets, getattr(block, "attentions", ()))):
            for list_name, module in zip(("resnets", "attentions"), pair):
                kind = OPERATOR_KINDS.get(type(module))
                if kind is not None:
                    operators.append(Operator(name=f"{block_name}.{list_name}.{j}", kind=kind,
                                              modifications=valid_modifications(module)))
    return operators


def modified_module(module, modification: str) -> nn.Module:
    """What takes the place of ``module`` under ``modification`` (see the module doc)."""
    if modification == "remove":
        return RemovedBlock(returns_tuple=isinstance(module, Transformer2DModel))
    return ChannelProjection(copy.deepcopy(module.conv_shortcut))


def checked_operator(model, name: str, modification: str) -> nn.Module:
    """The module ``name`` of ``model``, after checking that it is an operator that allows ``modification``."""
    operators = {op.name: op for op in enumerate_operators(model)}
    if name not in operators:
        raise InputError(f"{name!r} is not an unmodified resnet or attention block of this U-Net")
    if modification not in operators[name].modifications:
        raise InputError(f"{name!r} allows {', '.join(operators[name].modifications)}, not {modification!r}")
    return model.get_submodule(name)


def apply_modification(model, name: str, modification: str):
    """Modify operator ``name`` in place ('remove' or 'replace') and record it in ``model.diffprune_modifications``."""
    model.set_submodule(name, modified_module(checked_operator(model, name, modification), modification))
    model.diffprune_modifications = [*getattr(model, "diffprune_modifications", []), [name, modification]]
    return model


def apply_modifications(model, modifications):
    """Apply [(name, modification), ...] in place, e.g. the list saved with a checkpoint, on a fresh base model."""
    for name, modification in modifications:
        apply_modification(model, name, modification)
    return model


@contextmanager
def modification_applied(model, name: str, modification: str):
    """Within the block, ``model`` has one operator modified; the original module is put back afterwards."""
    original = checked_operator(model, name, modification)
    model.set_submodule(name, modified_module(original, modification))
    try:
        yield
    finally:
        model.set_submodule(name, original)


def ld_score(orig: torch.Tensor, mod: torch.Tensor) -> float:
    """||avg_orig - avg_mod||_2 + ||std_orig - std_mod||_2, avg/std per element over the N_gen samples (dim 0)."""
    if orig.shape != mod.shape or orig.ndim == 0 or len(orig) == 0:
        raise InputError(f"need two equal-shaped sets of samples, got {tuple(orig.shape)} and {tuple(mod.shape)}")
    orig, mod = (samples.detach().double().cpu().reshape(len(samples), -1) for samples in (orig, mod))
    avg_dist = torch.linalg.vector_norm(orig.mean(0) - mod.mean(0))
    std_dist = torch.linalg.vector_norm(orig.std(0, correction=0) - mod.std(0, correction=0))
    return float(avg_dist + std_dist)


@torch.no_grad()
def score_operators(model, generate, *, inputs: dict | None = None, progress: bool = True) -> pd.DataFrame:
    """Score every modification of every operator (Figure 1: k + 1 sets of N_gen outputs).

    ``generate(model) -> Tensor`` gives the N_gen outputs (latents for an LDM, images for a pixel DDPM) and must
    start from the same noise at every call (a fixed seed). ``inputs`` (default: example_inputs at batch 1) are
    for the MACs count. Rank 1 is the least important modification, the first to prune.
    """
    inputs = inputs or example_inputs(model)
    reference = generate(model)
    dense_macs = count_macs(model, inputs)["macs"]
    rows = []
    for op in bar(enumerate_operators(model), desc="LD-Pruner operators", progress=progress):
        module = model.get_submodule(op.name)
        for modification in op.modifications:
            with modification_applied(model, op.name, modification):
                rows.append({"operator": op.name, "kind": op.kind, "modification": modification,
                             "score": ld_score(reference, generate(model)),
                             "params_removed": count_params(module) - count_params(model.get_submodule(op.name)),
                             "macs_removed": dense_macs - count_macs(model, inputs)["macs"]})
    scores = pd.DataFrame(rows)
    scores["rank"] = scores["score"].rank(method="first").astype(int)
    return scores


def prune_by_scores(model, scores: pd.DataFrame, *, n_operators: int | None = None, macs_reduction: float | None = None,
                    inputs: dict | None = None, stop_when=None) -> list[tuple[str, str]]:
    """Apply the lowest-scoring modifications in place, one per operator, until exactly one target is met.

    Targets: ``n_operators`` modified; a fraction ``macs_reduction`` of the MACs removed (of the model at
    ``inputs``, default example_inputs; the rows' macs_removed add up, since no modification changes a shape);
    or ``stop_when(model)`` true, e.g. a measured latency under a budget. Returns the (name, modification) applied.
    """
    if sum(target is not None for target in (n_operators, macs_reduction, stop_when)) != 1:
        raise InputError("give exactly one of n_operators, macs_reduction, stop_when")
    candidates = scores.sort_values("rank").drop_duplicates("operator")
    if n_operators is not None and not 1 <= n_operators <= len(candidates):
        raise InputError(f"n_operators must be in [1, {len(candidates)}], got {n_operators}")
    if macs_reduction is not None:
        dense_macs = count_macs(model, inputs or example_inputs(model))["macs"]
        target_macs = check_ratio(macs_reduction, "macs_reduction") * dense_macs
        if candidates["macs_removed"].sum() < target_macs:
            raise InputError(f"modifying every operator removes less than {macs_reduction:.1%} of the MACs")
    applied, macs_removed = [], 0
    for row in candidates.itertuples():
        apply_modification(model, row.operator, row.modification)
        applied.append((row.operator, row.modification))
        macs_removed += row.macs_removed
        if (len(applied) == n_operators or (macs_reduction is not None and macs_removed >= target_macs)
                or (stop_when is not None and stop_when(model))):
            return applied
    raise InputError(f"stop_when still false with all {len(applied)} operators modified (the model keeps them)")


def ld_scores(model, *, n_gen: int = 16, sample_steps: int = 20, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """:func:`score_operators` of a DiffusionModel (or a bare U-Net) with ``generate()`` =
    ``ddim_sample(model, n=n_gen, seed=seed, steps=sample_steps, decode=False)``: N_gen outputs of the whole reverse
    process from one fixed x_T and fixed conditions. For a pixel DDPM (our teacher) these are images; for a latent
    diffusion model they are latents, the paper's setting."""
    pipe = as_diffusion_model(model)

    def generate(unet):  # ``unet`` is pipe.unet, modified in place by score_operators
        return ddim_sample(pipe, n=n_gen, seed=seed, steps=sample_steps, progress=False, decode=False)

    return score_operators(pipe.unet, generate, inputs=example_inputs(pipe), progress=progress)


def ld_prune(model, *, macs_reduction: float | None = None, n_operators: int | None = None, n_gen: int = 16,
             sample_steps: int = 20, seed: int = 0, progress: bool = True) -> dict:
    """LD-Pruner end to end on a DiffusionModel (or a bare U-Net), in place: score every operator (:func:`ld_scores`),
    prune the lowest (:func:`prune_by_scores`). Exactly one target: a fraction ``macs_reduction`` of the MACs
    removed, or ``n_operators`` modified. Returns the ranking and the (name, modification) pairs applied.
    """
    if (macs_reduction is None) == (n_operators is None):
        raise InputError("give exactly one of macs_reduction and n_operators")
    if macs_reduction is not None:
        check_ratio(macs_reduction, "macs_reduction")
    pipe = as_diffusion_model(model)
    operators = len(enumerate_operators(pipe.unet))
    if n_operators is not None and not 1 <= n_operators <= operators:
        raise InputError(f"n_operators must be in [1, {operators}], got {n_operators}")
    scores = ld_scores(pipe, n_gen=n_gen, sample_steps=sample_steps, seed=seed, progress=progress)
    modifications = prune_by_scores(pipe.unet, scores, macs_reduction=macs_reduction, n_operators=n_operators,
                                    inputs=example_inputs(pipe))
    return {"scores": scores, "modifications": modifications, "macs_reduction_target": macs_reduction,
            "scored": "latents" if pipe.autoencoder is not None else "samples (images)",
            "n_operators_target": n_operators, "n_gen": n_gen, "sample_steps": sample_steps, "seed": seed}
