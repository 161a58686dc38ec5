"""Algorithm 1's stopping rule read off a loss curve agrees with the gradient pass that applies it."""
import pytest
import torch

from diffprune_core.criteria import accumulate_gradients, timestep_losses
from diffprune_core.errors import InputError
from diffprune_core.pipeline import noise_scheduler
from diffprune_core.thresholds import relative_losses, timesteps_kept


def test_relative_losses_use_the_running_maximum():
    assert relative_losses([1.0, 2.0, 1.0, 4.0, 1.0]).tolist() == [1.0, 1.0, 0.5, 1.0, 0.25]


def test_the_first_crossing_stops_even_if_later_losses_rise_again():
    losses = [1.0, 0.5, 0.04, 0.9, 0.01]
    assert timesteps_kept(losses, 0.0) == 5
    assert timesteps_kept(losses, 0.05) == 2
    assert timesteps_kept(losses, 0.5) == 1  # L_t / L_max <= T stops, equality included
    with pytest.raises(InputError):
        timesteps_kept(losses, 1.0)


def test_counts_equal_the_timesteps_accumulate_gradients_uses(tiny_unet):
    alphas_cumprod = noise_scheduler().alphas_cumprod[::25]  # 40 timesteps keep the test fast
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    losses = timestep_losses(tiny_unet, images, alphas_cumprod, timesteps=range(len(alphas_cumprod)), seed=3,
                             progress=False)
    lowest = float(relative_losses(losses).min())  # a random U-Net's curve is flat: cut it between its extremes
    counts = {}
    for threshold in (0.0, *(lowest + f * (1 - lowest) for f in (0.25, 0.5, 0.9))):
        report = accumulate_gradients(tiny_unet, images, alphas_cumprod, threshold=threshold, seed=3, progress=False)
        counts[threshold] = len(report.timesteps_used)
        assert timesteps_kept(losses, threshold) == counts[threshold]
    assert len(set(counts.values())) >= 3, f"thresholds should cut the curve at different places: {counts}"
