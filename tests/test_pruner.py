"""The pruner on diffusers U-Nets: the paper's architecture columns, widths, and a consistent model afterwards."""
import pandas as pd
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from torch import nn

from diffprune_core.architectures import DATA_DIR, build_paper_unet, example_inputs, paper_unet_configs
from diffprune_core.complexity import count_macs
from diffprune_core.criteria import StructureImportance
from diffprune_core.errors import InputError
from diffprune_core.pruner import (Widths, architecture_counts, channels_to_remove, paper_widths, prune_unet,
                                   search_ratio_for_macs)

PAPER = pd.read_csv(DATA_DIR / "paper_tables.csv")
# (paper U-Net, the table row that gives its pruned columns, round_to of the official script, and how its
# Torch-Pruning counted the feed-forward's GEGLU projection: the LDM's widths need "outputs")
PAPER_ROWS = {
    "cifar10-32": ("1", "cifar10-32", None, "channels"),
    "celeba-64": ("1", "celeba-64", None, "channels"),
    "lsun-256": ("2", "lsun-church-256", None, "channels"),
    "imagenet-ldm-cin256-v2": ("3", "imagenet-256-ldm", 2, "outputs"),
}


def paper_columns(table, dataset, method):
    row = PAPER[(PAPER.table == table) & (PAPER.dataset == dataset) & (PAPER.method == method)].iloc[0]
    return row.params_M, row.macs_G


@pytest.mark.parametrize("name", list(PAPER_ROWS))
def test_paper_architecture_columns_at_ratio_0_3(name):
    table, dataset, round_to, chunk_count = PAPER_ROWS[name]
    model = build_paper_unet(name)
    inputs = example_inputs(model)
    dense = count_macs(model, inputs)
    assert dense["params"] / 1e6 == pytest.approx(paper_columns(table, dataset, "pretrained")[0], rel=0.02)
    assert dense["macs"] / 1e9 == pytest.approx(paper_columns(table, dataset, "pretrained")[1], rel=0.02)
    prune_unet(model, StructureImportance("magnitude"), ratio=0.3, inputs=inputs,
               widths=Widths(round_to=round_to, chunk_count=chunk_count))
    pruned = count_macs(model, inputs)
    params, macs = paper_columns(table, dataset, "scratch")  # same architecture as the pruned rows
    assert pruned["params"] / 1e6 == pytest.approx(params, rel=0.02)
    assert pruned["macs"] / 1e9 == pytest.approx(macs, rel=0.02)
    assert pruned["macs_with_attention"] > pruned["macs"]
    assert model(**inputs).sample.shape == inputs["sample"].shape


def test_cifar_widths_follow_the_papers_rounding():
    model = build_paper_unet("cifar10-32")
    prune_unet(model, StructureImportance("magnitude"), ratio=0.3, inputs=example_inputs(model))
    assert model.down_blocks[0].resnets[0].conv1.out_channels == 96  # 128 -> 96: 1 of 4 channels per GroupNorm group
    assert model.down_blocks[1].resnets[0].conv1.out_channels == 192  # 256 -> 192: 2 of 8
    attn = model.down_blocks[1].attentions[0]
    assert (attn.to_q.out_features, attn.to_k.out_features, attn.to_v.out_features) == (179, 179, 179)
    assert model.time_embedding.linear_1.out_features == 358
    assert model.conv_out.out_channels == 3


def test_widths_multiple_of_8_keep_the_groupnorm_and_head_constraints():
    """Issue 12: every kept width the nearest multiple of 8 (179 -> 176, 358 -> 360), GroupNorm groups equal."""
    model = build_paper_unet("cifar10-32")
    prune_unet(model, StructureImportance("magnitude"), ratio=0.3, inputs=example_inputs(model),
               widths=Widths(multiple_of=8))
    attn = model.down_blocks[1].attentions[0]
    assert (attn.to_q.out_features, model.time_embedding.linear_1.out_features) == (176, 360)
    assert model.down_blocks[0].resnets[0].conv1.out_channels == 96  # 32 GroupNorm groups of 3: already a multiple
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module is not model.conv_out:
            assert module.out_features % 8 == 0 if isinstance(module, nn.Linear) else module.out_channels % 8 == 0
        if isinstance(module, nn.GroupNorm):
            assert module.num_channels % module.num_groups == 0
    inputs = example_inputs(model)
    assert model(**inputs).sample.shape == inputs["sample"].shape
    six_groups = Widths(multiple_of=8)  # 6 GroupNorm groups of 32: steps of 4 per group keep 24 | kept
    assert [six_groups.removed_per_part(192, ratio, 6) for ratio in (0.1, 0.3, 0.5)] == [4, 8, 16]
    assert Widths(multiple_of=8).removed_per_part(4, 0.3, 1) == 2, "narrower than 8: the paper's rounding (keeps 2)"
    with pytest.raises(InputError, match="multiple_of"):
        Widths(multiple_of=0)
    with pytest.raises(InputError, match="chunk_count"):
        Widths(chunk_count="halves")


def test_channels_to_remove():
    assert channels_to_remove(128, 0.3, 32) == 1
    assert channels_to_remove(256, 0.3, 32) == 2
    assert channels_to_remove(256, 0.3) == 77
    assert channels_to_remove(192, 0.3, 6, round_to=2) == 9  # keeps 134 + 2 = 136 of 192


# Table 4 (MACs-based ratios): our (params M, MACs G) for each MACs-reduction target, pinned. Widths move in
# whole GroupNorm-group steps, and the search takes the step closest to the target. 16% and 44% match the paper
# within 2%; 56% matches its MACs (2.7G) with 13.9M params against 14.3M. The paper's "70%" row has 1.5G of
# 6.1G MACs, a 75% reduction: at 70% we land on 2.02G, and at 75% on the paper's row (8.91M vs 8.6M, 1.52G vs 1.5G).
TABLE4 = {0.16: (27.24, 5.09), 0.44: (19.90, 3.40), 0.56: (13.90, 2.70), 0.70: (13.06, 2.02), 0.75: (8.91, 1.52)}
TABLE4_PAPER_ROW = {0.16: 0.16, 0.44: 0.44, 0.56: 0.56, 0.75: 0.70}  # our target -> the paper's ratio label


@pytest.mark.parametrize("target", list(TABLE4))
def test_table4_macs_targets(target):
    model = build_paper_unet("cifar10-32")
    inputs = example_inputs(model)
    ratio = search_ratio_for_macs(model, target, inputs)
    pruned = count_macs(prune_unet(model, StructureImportance("magnitude"), ratio=ratio, inputs=inputs), inputs)
    params, macs = pruned["params"] / 1e6, pruned["macs"] / 1e9
    assert (params, macs) == pytest.approx(TABLE4[target], abs=0.01)
    if target in TABLE4_PAPER_ROW:
        row = PAPER[(PAPER.table == "4") & (PAPER.ratio == TABLE4_PAPER_ROW[target])].iloc[0]
        assert macs == pytest.approx(row.macs_G, rel=0.02)


def test_either_attention_processor_gives_the_same_output(tiny_unet, tiny_cond_unet):
    for model in (tiny_unet, tiny_cond_unet):
        inputs = example_inputs(model, batch_size=2)
        prune_unet(model, StructureImportance("magnitude"), ratio=0.3, inputs=inputs)
        attentions = [m for m in model.modules() if isinstance(m, Attention)]
        for attn in attentions:
            attn.set_processor(AttnProcessor())
        classic = model(**inputs).sample
        for attn in attentions:
            attn.set_processor(AttnProcessor2_0())
        torch.testing.assert_close(model(**inputs).sample, classic, rtol=1e-4, atol=1e-5)


def test_groups_and_heads_stay_consistent(tiny_cond_unet):
    inputs = example_inputs(tiny_cond_unet)
    prune_unet(tiny_cond_unet, StructureImportance("random"), ratio=0.4, inputs=inputs)
    for module in tiny_cond_unet.modules():
        if isinstance(module, nn.GroupNorm):
            assert module.num_channels % module.num_groups == 0
        if isinstance(module, Attention):
            assert module.inner_dim % module.heads == 0 and module.inner_dim < module.heads * 32
            assert module.to_k.out_features == module.to_q.out_features
    assert tiny_cond_unet(**inputs).sample.shape == inputs["sample"].shape


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_ratio_out_of_range(tiny_unet, ratio):
    with pytest.raises(InputError, match="ratio"):
        prune_unet(tiny_unet, StructureImportance("magnitude"), ratio=ratio, inputs=example_inputs(tiny_unet))


def test_paper_configs_cover_the_four_unets():
    assert set(paper_unet_configs()) == set(PAPER_ROWS)


def test_geglu_feed_forward_counts_channels_or_outputs():
    """GEGLU's projection has 2C outputs (a value and a gate per channel) for the C inputs of the output linear.

    Counted in channels it keeps int(C * 0.7); counted in outputs (Torch-Pruning 1.x, the paper's LDM) it loses
    2C - int(2C * 0.7) channels. Either way value and gate go together, whatever the criterion.
    """
    for chunk_count, kept in (("channels", 44), ("outputs", 25)):  # C = 64 (the feed-forward of a 16-wide block)
        widths = set()
        for criterion in ("magnitude", "random"):
            torch.manual_seed(0)
            model = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                         layers_per_block=1, norm_num_groups=4, cross_attention_dim=16,
                                         attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
            prune_unet(model, StructureImportance(criterion), ratio=0.3, inputs=example_inputs(model),
                       widths=Widths(chunk_count=chunk_count))
            ff = model.down_blocks[0].attentions[0].transformer_blocks[0].ff
            assert ff.net[0].proj.out_features == 2 * ff.net[2].in_features
            widths.add(ff.net[2].in_features)
        assert widths == {kept}, chunk_count


def test_architecture_counts_are_the_counts_before_and_after_pruning(tiny_unet):
    inputs = example_inputs(tiny_unet)
    dense = count_macs(tiny_unet, inputs)
    counts = architecture_counts(tiny_unet, inputs, ratio=0.3)
    pruned = count_macs(tiny_unet, inputs)  # the model is pruned in place
    assert counts["params_M"] == dense["params"] / 1e6 and counts["pruned_params_M"] == pruned["params"] / 1e6
    assert counts["macs_G"] == dense["macs"] / 1e9 and counts["pruned_macs_G"] == pruned["macs"] / 1e9
    assert pruned["params"] < dense["params"] and counts["prune_seconds"] > 0


def test_paper_widths_are_the_official_scripts(tiny_unet, tiny_cond_unet):
    assert paper_widths(tiny_unet) == Widths()
    assert paper_widths(tiny_cond_unet) == Widths(round_to=2, chunk_count="outputs")
    assert paper_widths(tiny_cond_unet, multiple_of=8, ldm_round_to=None).multiple_of == 8
