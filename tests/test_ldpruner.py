import copy
import math
from collections import Counter

import pytest
import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from diffprune_core import ldpruner
from diffprune_core.architectures import build_paper_unet, example_inputs, paper_unet_configs
from diffprune_core.complexity import count_macs
from diffprune_core.errors import InputError

TINY_UNETS = {
    "UNet2DModel": lambda: UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=4),
    "UNet2DConditionModel": lambda: UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, norm_num_groups=4, attention_head_dim=2),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(cls_name: str, seed: int = 0):
    torch.manual_seed(seed)
    return TINY_UNETS[cls_name]().eval()


def fixed_inputs(model, batch_size: int = 4) -> dict:
    """example_inputs drawn from a fixed seed: the same noise at every call."""
    torch.manual_seed(123)
    return example_inputs(model, batch_size=batch_size, timestep=500)


def one_pass(model):
    """The trivial generate(): one forward pass on fixed noise."""
    return model(**fixed_inputs(model)).sample


def expected_operators(name: str) -> Counter:
    """(path, kind, modifications) counts from the paper config: down blocks hold layers_per_block resnets
    (the first changes width when the block's channels grow), the mid block 2 resnets and 1 attention,
    up blocks layers_per_block + 1 resnets, all reading a concatenated skip; Attn blocks one attention per resnet."""
    entry = paper_unet_configs()[name]
    kwargs, layers = entry["kwargs"], entry["kwargs"]["layers_per_block"]
    widths = kwargs["block_out_channels"]
    attention = "transformer" if entry["class"] == "UNet2DConditionModel" else "attention"
    expected = Counter({("mid", "resnet", ("remove",)): 2, ("mid", attention, ("remove",)): 1})
    for i, block_type in enumerate(kwargs["down_block_types"]):
        grows = widths[max(i - 1, 0)] != widths[i]
        expected[("down", "resnet", ("replace",))] += grows
        expected[("down", "resnet", ("remove",))] += layers - grows
        expected[("down", attention, ("remove",))] += layers * ("Attn" in block_type)
    for block_type in kwargs["up_block_types"]:
        expected[("up", "resnet", ("replace",))] += layers + 1
        expected[("up", attention, ("remove",))] += (layers + 1) * ("Attn" in block_type)
    return +expected


@pytest.mark.parametrize("name", sorted(paper_unet_configs()))
def test_paper_unet_operators(name):
    with torch.device("meta"):  # shapes only: no memory, no forward
        model = build_paper_unet(name)
    operators = ldpruner.enumerate_operators(model)
    assert Counter((op.path, op.kind, op.modifications) for op in operators) == expected_operators(name)
    assert len({op.name for op in operators}) == len(operators)
    classes = {"resnet": ResnetBlock2D, "attention": Attention, "transformer": Transformer2DModel}
    assert all(isinstance(model.get_submodule(op.name), classes[op.kind]) for op in operators)


@pytest.mark.parametrize("cls_name", sorted(TINY_UNETS))
def test_every_modification_runs_and_keeps_shapes(cls_name):
    model = tiny_unet(cls_name)
    inputs = fixed_inputs(model, batch_size=2)
    with torch.no_grad():
        dense = model(**inputs).sample
    operators = ldpruner.enumerate_operators(model)
    assert {op.kind for op in operators} == {"resnet", "transformer" if "Condition" in cls_name else "attention"}
    assert {m for op in operators for m in op.modifications} == {"remove", "replace"}
    for op in operators:
        for modification in op.modifications:
            modified = ldpruner.apply_modification(copy.deepcopy(model), op.name, modification)
            assert modified.diffprune_modifications == [[op.name, modification]]
            assert op.name not in {o.name for o in ldpruner.enumerate_operators(modified)}
            with torch.no_grad():
                out = modified(**inputs).sample
            assert out.shape == dense.shape and torch.isfinite(out).all()
            assert not torch.allclose(out, dense), f"{op.name} {modification} changed nothing"


def test_all_operators_modified_on_cifar_shape_runs():
    model = build_paper_unet("cifar10-32")
    inputs = example_inputs(model, batch_size=1)
    dense_macs = count_macs(model, inputs)["macs"]
    ldpruner.apply_modifications(model, [(op.name, op.modifications[0]) for op in ldpruner.enumerate_operators(model)])
    assert ldpruner.enumerate_operators(model) == []
    with torch.no_grad():
        assert model(**inputs).sample.shape == (1, 3, 32, 32)
    assert count_macs(model, inputs)["macs"] < 0.5 * dense_macs


def test_invalid_modifications_raise():
    model = tiny_unet("UNet2DModel")
    with pytest.raises(InputError, match="allows remove"):
        ldpruner.apply_modification(model, "mid_block.resnets.0", "replace")
    with pytest.raises(InputError, match="not an unmodified"):
        ldpruner.apply_modification(model, "conv_in", "remove")
    ldpruner.apply_modification(model, "mid_block.resnets.0", "remove")
    with pytest.raises(InputError, match="not an unmodified"):
        ldpruner.apply_modification(model, "mid_block.resnets.0", "remove")


def test_replacement_is_the_resnet_shortcut():
    model = tiny_unet("UNet2DModel")
    resnet = model.get_submodule("up_blocks.0.resnets.0")
    ldpruner.apply_modification(model, "up_blocks.0.resnets.0", "replace")
    projection = model.get_submodule("up_blocks.0.resnets.0")
    x = torch.randn(2, resnet.conv1.in_channels, 4, 4)
    torch.testing.assert_close(projection(x, None), resnet.conv_shortcut(x))


def test_ld_score_formula():
    generator = torch.Generator().manual_seed(0)
    orig = torch.randn(16, 3, 4, 4, generator=generator)
    assert ldpruner.ld_score(orig, orig.clone()) == 0.0
    c, d = 0.7, orig[0].numel()
    assert ldpruner.ld_score(orig, orig + c) == pytest.approx(c * math.sqrt(d))  # mean shift, same std
    centred = orig - orig.mean(0)
    std = centred.double().std(0, correction=0)
    assert ldpruner.ld_score(centred, 3 * centred) == pytest.approx(2 * std.norm().item())  # same mean, 3x std
    assert ldpruner.ld_score(orig[:1], orig[:1] + c) == pytest.approx(c * math.sqrt(d))  # N_gen = 1
    with pytest.raises(InputError):
        ldpruner.ld_score(orig, orig[:8])


@pytest.fixture(scope="module")
def scored_tiny_unet():
    model = tiny_unet("UNet2DModel")
    return model, ldpruner.score_operators(model, one_pass, progress=False)


def test_score_operators_table_and_model_untouched(scored_tiny_unet):
    model, scores = scored_tiny_unet
    operators = ldpruner.enumerate_operators(model)
    assert list(scores.columns) == ["operator", "kind", "modification", "score",
                                    "params_removed", "macs_removed", "rank"]
    assert list(scores["operator"]) == [op.name for op in operators for _ in op.modifications]
    assert (scores["score"] > 0).all() and (scores["params_removed"] > 0).all() and (scores["macs_removed"] > 0).all()
    assert sorted(scores["rank"]) == list(range(1, len(scores) + 1))
    assert scores.sort_values("rank")["score"].is_monotonic_increasing
    assert not hasattr(model, "diffprune_modifications")
    torch.testing.assert_close(one_pass(model), one_pass(tiny_unet("UNet2DModel")))  # same weights, all restored
    row = scores.set_index("operator").loc["mid_block.attentions.0"]
    with ldpruner.modification_applied(model, "mid_block.attentions.0", "remove"):
        assert row["score"] == pytest.approx(ldpruner.ld_score(one_pass(tiny_unet("UNet2DModel")), one_pass(model)))


def test_prune_by_n_operators(scored_tiny_unet):
    model, scores = scored_tiny_unet
    model = copy.deepcopy(model)
    applied = ldpruner.prune_by_scores(model, scores, n_operators=3)
    lowest = scores.sort_values("rank").head(3)
    assert applied == list(zip(lowest["operator"], lowest["modification"]))
    assert model.diffprune_modifications == [list(pair) for pair in applied]


def test_prune_by_macs_reduction_meets_target(scored_tiny_unet):
    model, scores = scored_tiny_unet
    model = copy.deepcopy(model)
    inputs = example_inputs(model)
    dense = count_macs(model, inputs)["macs"]
    applied = ldpruner.prune_by_scores(model, scores, macs_reduction=0.3, inputs=inputs)
    reduction = 1 - count_macs(model, inputs)["macs"] / dense
    assert reduction >= 0.3
    last = scores.set_index(["operator", "modification"]).loc[applied[-1], "macs_removed"]
    assert reduction - last / dense < 0.3  # one fewer modification would miss the target
    with pytest.raises(InputError):
        ldpruner.prune_by_scores(copy.deepcopy(scored_tiny_unet[0]), scores, macs_reduction=0.999)
    with pytest.raises(InputError, match="exactly one"):
        ldpruner.prune_by_scores(model, scores, n_operators=2, macs_reduction=0.3)


def test_prune_until_stop_when(scored_tiny_unet):
    model, scores = scored_tiny_unet
    model = copy.deepcopy(model)
    applied = ldpruner.prune_by_scores(model, scores, stop_when=lambda m: len(m.diffprune_modifications) == 4)
    assert len(applied) == 4


@pytest.mark.parametrize("cls_name", sorted(TINY_UNETS))
def test_apply_modifications_on_fresh_model_reproduces_structure(cls_name):
    pruned = tiny_unet(cls_name, seed=1)
    operators = ldpruner.enumerate_operators(pruned)
    ldpruner.apply_modifications(pruned, [(op.name, op.modifications[0]) for op in operators[::2]])
    fresh = ldpruner.apply_modifications(type(pruned).from_config(pruned.config).eval(), pruned.diffprune_modifications)
    assert fresh.diffprune_modifications == pruned.diffprune_modifications
    assert [(n, type(m)) for n, m in fresh.named_modules()] == [(n, type(m)) for n, m in pruned.named_modules()]
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(one_pass(fresh), one_pass(pruned))
