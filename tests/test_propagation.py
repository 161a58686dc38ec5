"""The error-propagation measurement against closed forms, on stand-in noise predictors eps(x) = c x."""
import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from diffprune_core.errors import InputError
from diffprune_core.propagation import first_order_gains, propagate_errors, reverse_step, schedule
from diffprune_core.pipeline import noise_scheduler


class LinearPredictor(nn.Module):
    """eps(x, t) = c * x: a network whose response to its input is known exactly."""

    def __init__(self, c: float):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))
        self.config = SimpleNamespace(sample_size=4, in_channels=1)

    def forward(self, x, t):
        return SimpleNamespace(sample=self.c * x)


def test_reverse_step_is_diffusers_ddpm_step():
    s = schedule()
    scheduler = DDPMScheduler.from_config(noise_scheduler().config, clip_sample=False)
    x, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    for t in (1, 2, 500, 1000):
        generator = torch.Generator().manual_seed(t)
        expected = scheduler.step(eps, t - 1, x, generator=generator).prev_sample
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        ours = reverse_step(x.double(), eps.double(), t, z.double(), s).float()
        assert torch.allclose(ours, expected, atol=5e-4)  # diffusers' float32 x_0 detour loses ~1e-4 at t = 2


def test_first_order_gain_is_beta_over_sqrt_abar_one_minus_abar():
    gains = first_order_gains()
    s = schedule()
    t = 700
    beta, abar = float(s["beta"][t - 1]), float(s["abar"][t - 1])
    assert gains.loc[t - 1, "x0_gain"] == pytest.approx(beta / math.sqrt(abar * (1 - abar)))
    assert gains.loc[0, "chain_gain"] == 1.0 and gains["chain_gain"].is_monotonic_increasing


def test_a_network_that_ignores_its_input_follows_the_first_order_prediction():
    errors = propagate_errors(LinearPredictor(0.0), timesteps=[1, 40, 1000], scales=[0.1, 1.0], n=2, progress=False)
    assert len(errors) == 2 * (1 + 40 + 1000)
    assert torch.allclose(torch.tensor(errors["deviation"].values), torch.tensor(errors["predicted"].values), rtol=1e-6)
    x0 = errors[(errors.s == 0) & (errors.scale == 1.0)].set_index("t")["deviation"]
    assert x0[1000] == pytest.approx(first_order_gains().loc[999, "x0_gain"], rel=1e-6)


def test_the_network_response_enters_each_step_as_one_minus_beta_c_over_sqrt_one_minus_abar():
    c, t_injected = 0.5, 30
    errors = propagate_errors(LinearPredictor(c), timesteps=[t_injected], scales=[0.1], n=1, progress=False)
    s = schedule()
    expected = 0.1 * float(first_order_gains().loc[t_injected - 1, "step_gain"])
    for t in range(t_injected - 1, 0, -1):  # deviation of x_{t-1}: (1 - beta c / sqrt(1 - abar)) / sqrt(alpha) per step
        i = t - 1
        expected *= (1 - float(s["beta"][i]) * c / math.sqrt(1 - float(s["abar"][i]))) / math.sqrt(float(s["alpha"][i]))
    measured = errors.set_index("s").loc[0, "deviation"]
    assert measured == pytest.approx(expected, rel=1e-6)
    assert measured < errors.set_index("s").loc[0, "predicted"]


def test_bad_requests_are_input_errors():
    with pytest.raises(InputError):
        propagate_errors(LinearPredictor(0.0), timesteps=[0], scales=[0.1], progress=False)
    with pytest.raises(InputError):
        propagate_errors(LinearPredictor(0.0), timesteps=[5], scales=[], progress=False)
