import pytest
import torch
from diffusers import UNet2DModel

from diffprune_core.errors import InputError
from diffprune_core import metrics
from diffprune_core.metrics import mean_ssim, relative_latencies, sampling_latency, ssim


def smooth_images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Blurry random images in [-1, 1]: structure at several scales, like samples."""
    coarse = torch.rand(n, 1, size // 4, size // 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear") * 2 - 1


def test_ssim_of_identical_images_is_one():
    images = smooth_images(4, seed=0)
    torch.testing.assert_close(ssim(images, images), torch.ones(4))
    assert mean_ssim(images, images) == pytest.approx(1.0)


def test_ssim_of_different_images_is_below_one_and_symmetric():
    a, b = smooth_images(4, seed=0), smooth_images(4, seed=1)
    values = ssim(a, b)
    assert values.shape == (4,) and (values < 0.9).all()
    torch.testing.assert_close(values, ssim(b, a))


def test_ssim_compares_pairs_in_order():
    a = smooth_images(6, seed=0)
    slightly_changed = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(2))).clamp(-1, 1)
    aligned = mean_ssim(a, slightly_changed)
    shuffled = mean_ssim(a, slightly_changed[torch.tensor([1, 2, 3, 4, 5, 0])])
    assert aligned > 0.8 and shuffled < aligned - 0.3


def test_ssim_works_for_rgb_and_larger_images():
    a = smooth_images(2, seed=0, size=32).expand(-1, 3, -1, -1)
    assert mean_ssim(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize("a_shape, b_shape", [((2, 1, 16, 16), (3, 1, 16, 16)), ((1, 16, 16), (1, 16, 16)),
                                              ((2, 1, 16, 16), (2, 3, 16, 16)), ((2, 1, 4, 4), (2, 1, 4, 4))])
def test_bad_shapes_are_input_errors(a_shape, b_shape):
    with pytest.raises(InputError):
        ssim(torch.zeros(a_shape), torch.zeros(b_shape))


def test_sampling_latency_reports_median_times():
    torch.manual_seed(0)
    tiny = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    latency = sampling_latency(tiny, batch_size=2, steps=2, repeats=2, warmup=1)
    assert latency["seconds_per_batch"] > 0
    assert latency["seconds_per_image"] == pytest.approx(latency["seconds_per_batch"] / 2)
    assert latency["device"] == "cpu" and latency["torch_threads"] >= 1
    with pytest.raises(InputError):
        sampling_latency(tiny, batch_size=2, steps=2, repeats=0)


def test_relative_latencies_time_every_model_against_one_reference_so_drift_cancels(monkeypatch):
    """A machine that slows down by a tenth at every run: timed A B C A B C ... A after a warm-up round, the reference
    runs once per round, not once per model, and B / A and C / A stay exactly 2 and 3."""
    calls = []

    def fake_latency(model, **kwargs):
        calls.append(model)
        return {"seconds_per_batch": {"a": 1.0, "b": 2.0, "c": 3.0}[model] * (1 + 0.1 * len(calls))}

    monkeypatch.setattr(metrics, "sampling_latency", fake_latency)
    result = relative_latencies({"B": "b", "C": "c"}, "a", batch_size=2, steps=2, repeats=3)
    assert calls == ["a", "b", "c"] * 4 + ["a"], "a warm-up round, three rounds, the reference again at the end"
    for label, fraction in (("B", 2.0), ("C", 3.0)):
        timed = result[label]
        assert (timed["fraction"], timed["fraction_low"], timed["fraction_high"]) == pytest.approx((fraction,) * 3)
    # medians over the rounds: the reference at runs 4, 7, 10 (its first of each round), B at runs 5, 8, 11
    assert result["B"]["seconds"] == pytest.approx(2.0 * 1.8) and result["B"]["reference_seconds"] == pytest.approx(1.7)
    with pytest.raises(InputError):
        relative_latencies({"B": "b"}, "a", batch_size=2, repeats=0)


def test_allocator_says_whether_freed_large_blocks_stay_in_the_heap(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(4 * 2**30))
    assert "below 4 GiB in the heap" in metrics.allocator()
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert "at its defaults" in metrics.allocator()
