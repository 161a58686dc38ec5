"""Shared fixtures: small randomly initialised U-Nets, one of each diffusers class."""
import pytest
import torch
from diffusers import UNet2DConditionModel

from diffprune_core.teacher import build_teacher


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions run several times faster on one thread when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_unet():
    """The teacher's architecture (a 16x16, one-channel UNet2DModel) with random weights."""
    return build_teacher(seed=0).eval()


@pytest.fixture
def tiny_cond_unet():
    """A small UNet2DConditionModel with multi-head cross-attention, shaped like the ImageNet LDM's."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=24, attention_head_dim=[2, 4], norm_num_groups=8,
    ).eval()
