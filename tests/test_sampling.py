import pytest
import torch
from diffusers import UNet2DModel

from diffprune_core.errors import InputError
from diffprune_core.pipeline import noise_scheduler
from diffprune_core.sampling import ddim_sample, initial_noise


def teacher_shaped_unet(seed: int = 0) -> UNet2DModel:
    """A random-init U-Net with the shape of the digits teacher (16x16, one channel)."""
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32, 32),
                       layers_per_block=2, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


@pytest.fixture(scope="module")
def unet():
    return teacher_shaped_unet()


def test_noise_scheduler_is_the_linear_1000_step_schedule():
    betas = noise_scheduler().betas
    assert len(betas) == 1000
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


def test_initial_noise_depends_on_the_seed_alone():
    a = initial_noise(3, 5, (1, 16, 16))
    assert a.shape == (5, 1, 16, 16)
    assert torch.equal(a, initial_noise(3, 5, (1, 16, 16)))
    assert torch.equal(a[:2], initial_noise(3, 2, (1, 16, 16)))
    assert not torch.equal(a, initial_noise(4, 5, (1, 16, 16)))


def test_samples_have_the_model_shape_and_range(unet):
    samples = ddim_sample(unet, n=3, seed=0, steps=3, progress=False)
    assert samples.shape == (3, 1, 16, 16) and samples.dtype == torch.float32
    assert samples.min() >= -1 and samples.max() <= 1


def test_same_seed_same_samples_other_seed_other_samples(unet):
    a = ddim_sample(unet, n=2, seed=7, steps=3, progress=False)
    assert torch.equal(a, ddim_sample(unet, n=2, seed=7, steps=3, progress=False))
    assert not torch.allclose(a, ddim_sample(unet, n=2, seed=8, steps=3, progress=False))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_samples_do_not_depend_on_the_batch_size(unet, eta):
    small = ddim_sample(unet, n=4, seed=1, steps=3, eta=eta, batch_size=2, progress=False)
    large = ddim_sample(unet, n=4, seed=1, steps=3, eta=eta, batch_size=4, progress=False)
    torch.testing.assert_close(small, large, atol=1e-5, rtol=0)


def first_model_input(model, seed: int) -> torch.Tensor:
    inputs = []
    handle = model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    ddim_sample(model, n=2, seed=seed, steps=1, progress=False)
    handle.remove()
    return inputs[0]


def test_two_models_start_from_the_same_noise(unet):
    """A dense and a pruned model given one seed see the same x_T at their first step."""
    x_T = first_model_input(unet, seed=5)
    assert torch.equal(x_T, initial_noise(5, 2, (1, 16, 16)))
    assert torch.equal(first_model_input(teacher_shaped_unet(seed=1), seed=5), x_T)


def test_model_is_left_in_its_training_mode(unet):
    unet.train()
    ddim_sample(unet, n=1, seed=0, steps=1, progress=False)
    assert unet.training
    unet.eval()


def test_per_sample_model_kwargs_are_split_per_batch():
    torch.manual_seed(0)
    conditional = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                              layers_per_block=1, norm_num_groups=4, num_class_embeds=3,
                              down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    labels = torch.tensor([0, 1, 2])
    batched = ddim_sample(conditional, n=3, seed=0, steps=2, batch_size=2, progress=False, labels=labels)
    whole = ddim_sample(conditional, n=3, seed=0, steps=2, batch_size=3, progress=False, labels=labels)
    torch.testing.assert_close(batched, whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(steps=0), dict(steps=1001), dict(eta=-1.0), dict(batch_size=0)])
def test_bad_sampling_arguments_are_input_errors(unet, kwargs):
    with pytest.raises(InputError):
        ddim_sample(unet, **{"n": 1, "seed": 0, "progress": False, **kwargs})
