"""Every U-Net configuration diffusers can build, pruned with every criterion (LD-Pruner included), reloaded
bit for bit and sampled through the CLI; or refused before pruning with one line that names the block.

Tiny random-weight models, one channel (three for the skip blocks, whose image skip is RGB in diffusers), fed
seeded random images in the gradient criteria; the configurations cover
every down/up/mid block type of UNet2DModel and UNet2DConditionModel, positional and Fourier time embeddings,
every class_embed_type, scale-shift, one and several heads, linear projection, two transformer layers per
block, and SDXL's text_time added inputs.
"""
import copy
import json

import pytest
import torch
from diffusers import UNet2DConditionModel, UNet2DModel

from diffprune_core.architectures import example_inputs
from diffprune_core.checkpoints import load_model, save_model
from diffprune_core.cli import main
from diffprune_core.complexity import count_params
from diffprune_core.criteria import CRITERIA
from diffprune_core.errors import InputError
from diffprune_core.ldpruner import ld_prune
from diffprune_core.pipeline import DiffusionModel
from diffprune_core.pruner import prune

pytestmark = pytest.mark.usefixtures("one_thread")

PIXEL = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
             norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
             up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)
CONDITIONAL = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                   norm_num_groups=4, cross_attention_dim=16, attention_head_dim=8,
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))

RGB = {"in_channels": 3, "out_channels": 3}


def blocks(down: str, up: str) -> dict:
    return {"down_block_types": (down, down), "up_block_types": (up, up)}


CONFIGURATIONS = {
    "2d-down-up": (UNet2DModel, blocks("DownBlock2D", "UpBlock2D")),
    "2d-resnet-downsample-upsample": (UNet2DModel, blocks("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D")),
    "2d-attn": (UNet2DModel, blocks("AttnDownBlock2D", "AttnUpBlock2D")),
    "2d-skip": (UNet2DModel, {**blocks("SkipDownBlock2D", "SkipUpBlock2D"), **RGB}),
    "2d-attn-skip": (UNet2DModel, {**blocks("AttnSkipDownBlock2D", "AttnSkipUpBlock2D"), "block_out_channels": (32, 64),
                                   **RGB}),
    "2d-skip-fourier": (UNet2DModel, {**blocks("SkipDownBlock2D", "SkipUpBlock2D"), "time_embedding_type": "fourier",
                                      "flip_sin_to_cos": False, **RGB}),
    "2d-k-blocks": (UNet2DModel, {**blocks("KDownBlock2D", "KUpBlock2D"), "block_out_channels": (32, 64)}),
    "2d-no-mid": (UNet2DModel, {"mid_block_type": None}),
    "2d-fourier": (UNet2DModel, {"time_embedding_type": "fourier"}),
    "2d-scale-shift": (UNet2DModel, {"resnet_time_scale_shift": "scale_shift"}),
    "2d-class-labels": (UNet2DModel, {"num_class_embeds": 10}),
    "2d-class-timestep": (UNet2DModel, {"class_embed_type": "timestep"}),
    "2d-class-identity": (UNet2DModel, {"class_embed_type": "identity"}),
    "2d-one-head": (UNet2DModel, {"attention_head_dim": None}),
    "2d-no-attention": (UNet2DModel, {"add_attention": False}),
    "cond-cross-attn": (UNet2DConditionModel, {}),
    "cond-simple-cross-attn": (UNet2DConditionModel, {
        **blocks("SimpleCrossAttnDownBlock2D", "SimpleCrossAttnUpBlock2D"),
        "mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}),
    "cond-resnet-downsample-upsample": (UNet2DConditionModel, {
        **blocks("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D"), "mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}),
    "cond-k-upscaler": (UNet2DConditionModel, {
        "down_block_types": ("KDownBlock2D", "KCrossAttnDownBlock2D"),
        "up_block_types": ("KCrossAttnUpBlock2D", "KUpBlock2D"), "mid_block_type": None, "block_out_channels": (32, 32),
        "attention_head_dim": 16, "time_embedding_dim": 32, "norm_num_groups": None,
        "resnet_time_scale_shift": "scale_shift", "time_embedding_type": "fourier", "act_fn": "gelu",
        "timestep_post_act": "gelu", "conv_in_kernel": 1, "conv_out_kernel": 1, "flip_sin_to_cos": True,
        "freq_shift": 0}),
    "cond-no-mid": (UNet2DConditionModel, {"mid_block_type": None}),
    "cond-linear-projection": (UNet2DConditionModel, {"use_linear_projection": True}),
    "cond-two-transformer-layers": (UNet2DConditionModel, {"transformer_layers_per_block": 2}),
    "cond-one-head": (UNet2DConditionModel, {"attention_head_dim": 1}),
    "cond-heads-per-block": (UNet2DConditionModel, {"attention_head_dim": (2, 4)}),
    "cond-class-labels": (UNet2DConditionModel, {"num_class_embeds": 10}),
    "cond-class-timestep": (UNet2DConditionModel, {"class_embed_type": "timestep"}),
    "cond-class-identity": (UNet2DConditionModel, {"class_embed_type": "identity"}),
    "cond-class-projection": (UNet2DConditionModel, {"class_embed_type": "projection",
                                                     "projection_class_embeddings_input_dim": 12}),
    "cond-class-simple-projection": (UNet2DConditionModel, {"class_embed_type": "simple_projection",
                                                            "projection_class_embeddings_input_dim": 12}),
    "cond-fourier": (UNet2DConditionModel, {"time_embedding_type": "fourier"}),
    "cond-scale-shift": (UNet2DConditionModel, {"resnet_time_scale_shift": "scale_shift"}),
    "cond-time-cond-proj": (UNet2DConditionModel, {"time_cond_proj_dim": 8}),
    "cond-sdxl-text-time": (UNet2DConditionModel, {"addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                                                   "projection_class_embeddings_input_dim": 16 + 6 * 8}),
}


def build(name: str):
    cls, overrides = CONFIGURATIONS[name]
    torch.manual_seed(0)
    return cls(**{**(PIXEL if cls is UNet2DModel else CONDITIONAL), **overrides}).eval()


# UNet2DModel's Fourier embedding takes log t (a score-SDE model): DDPM's t = 0 makes its output -inf, so the
# criteria that evaluate the model (gradients, LD-Pruner's sampling) and DDIM stop with one line saying so.
LOG_TIME = {"2d-fourier", "2d-skip-fourier"}
LOG_TIME_ERROR = "not finite.*Fourier time embedding takes log t"


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_prunes_with_every_criterion_reloads_and_samples(name, tmp_path, capsys):
    dense = DiffusionModel(unet=build(name))
    images = torch.rand((2, *dense.image_shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    inputs = example_inputs(dense, batch_size=2)
    with torch.no_grad():
        shape = dense.unet(**inputs).sample.shape
    widths, pruned = {}, []
    for criterion in (*CRITERIA, "ld-pruner"):
        model = copy.deepcopy(dense)
        if name in LOG_TIME and criterion in ("taylor", "diff-pruning", "ld-pruner"):
            with pytest.raises(InputError, match=LOG_TIME_ERROR):
                prune(model, criterion, ratio=0.3, images=images, stride=500, progress=False) \
                    if criterion != "ld-pruner" else ld_prune(model, n_operators=2, n_gen=1, sample_steps=1)
            continue
        if criterion == "ld-pruner":
            ld_prune(model, n_operators=2, n_gen=1, sample_steps=1, progress=False)
        else:
            prune(model, criterion, ratio=0.3, images=images, threshold=0.05, stride=500, progress=False)
            widths[criterion] = [tuple(p.shape) for p in model.unet.parameters()]
        assert count_params(model.unet) < count_params(dense.unet), criterion
        with torch.no_grad():
            out = model.unet(**inputs).sample
        assert out.shape == shape and torch.isfinite(out).all(), criterion
        save_model(model, tmp_path / criterion)
        pruned.append(criterion)
        with torch.no_grad():
            reloaded = load_model(str(tmp_path / criterion)).unet(**inputs).sample
        assert torch.equal(reloaded, out), f"{criterion}: reload differs"
    assert len(set(map(tuple, widths.values()))) == 1, "widths depend on the ratio alone, not on the criterion"
    for criterion in ("magnitude", "ld-pruner") if "ld-pruner" in pruned else ("magnitude",):
        status = main(["sample", "--model", str(tmp_path / criterion), "--n", "2", "--seed", "0", "--steps", "1",
                       "--out", str(tmp_path / f"samples-{criterion}")])
        if name in LOG_TIME:
            assert status == 1 and "Fourier time embedding" in capsys.readouterr().err
            continue
        assert status == 0
        report = json.loads((tmp_path / f"samples-{criterion}" / "report.json").read_text())
        assert report["shape"] == [2, *dense.image_shape]


def test_scale_shift_keeps_whole_groupnorm_groups():
    """time_emb_proj's 2C outputs (scale and shift) count each channel once: 16 channels in 4 groups -> 12."""
    model = DiffusionModel(unet=build("2d-scale-shift"))
    prune(model, "magnitude", ratio=0.3)
    resnet = model.unet.down_blocks[0].resnets[0]
    assert resnet.norm2.num_channels == 12 and resnet.time_emb_proj.out_features == 24


def test_k_upscaler_prunes_each_channel_once():
    """The AdaGroupNorm-linked stream of width 32 keeps int(32 * 0.7) = 22 channels, not 5."""
    model = DiffusionModel(unet=build("cond-k-upscaler"))
    prune(model, "magnitude", ratio=0.3)
    assert model.unet.conv_in.out_channels == 22


def test_an_unknown_block_is_refused_before_pruning():
    class MyDownBlock(torch.nn.Module):
        pass

    model = DiffusionModel(unet=build("2d-down-up"))
    model.unet.down_blocks[1] = MyDownBlock()
    with pytest.raises(InputError, match="down_blocks.1 is a MyDownBlock, which diffprune cannot prune soundly"):
        prune(model, "magnitude", ratio=0.3)


def test_an_unsupported_added_input_is_one_line():
    unet = UNet2DConditionModel(**{**CONDITIONAL, "addition_embed_type": "text", "encoder_hid_dim": 16})
    with pytest.raises(InputError, match="addition_embed_type 'text'"):
        DiffusionModel(unet=unet).conditions(1)
