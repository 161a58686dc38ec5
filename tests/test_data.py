import numpy as np
import pytest
import torch
from PIL import Image

from diffprune_core.data import load_images
from diffprune_core.errors import InputError


def test_digits_are_1797_grayscale_images_in_model_range():
    images = load_images("digits", image_size=16, channels=1)
    assert images.shape == (1797, 1, 16, 16) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1
    assert (images > 0).float().mean() > 0.1, "the strokes should survive the resize"


def test_digits_subsets_are_fixed_by_the_seed():
    a = load_images("digits", image_size=16, channels=1, limit=10, seed=0)
    assert a.shape == (10, 1, 16, 16)
    assert torch.equal(a, load_images("digits", image_size=16, channels=1, limit=10, seed=0))
    assert not torch.equal(a, load_images("digits", image_size=16, channels=1, limit=10, seed=1))


def test_digits_as_three_channels_repeat_the_gray_level():
    rgb = load_images("digits", image_size=8, channels=3, limit=4)
    assert rgb.shape == (4, 3, 8, 8)
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])


def write_image(path, array, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


def test_folder_images_are_read_recursively_cropped_and_converted(tmp_path):
    wide_red = np.zeros((20, 40, 3)); wide_red[:, 10:30, 0] = 255  # red only in the central square
    write_image(tmp_path / "a.png", wide_red, "RGB")
    write_image(tmp_path / "nested" / "b.png", np.full((16, 16), 255), "L")
    write_image(tmp_path / "nested" / "c.png", np.zeros((16, 16, 4)), "RGBA")
    (tmp_path / "notes.txt").write_text("not an image")

    rgb = load_images(f"folder:{tmp_path}", image_size=8, channels=3)
    assert rgb.shape == (3, 3, 8, 8)
    assert torch.allclose(rgb[0, 0], torch.ones(8, 8)), "the center crop keeps only the red square"
    assert torch.allclose(rgb[0, 1:], -torch.ones(2, 8, 8))
    assert torch.equal(rgb[1], torch.ones(3, 8, 8)) and torch.equal(rgb[2], -torch.ones(3, 8, 8))

    gray = load_images(f"folder:{tmp_path}", image_size=8, channels=1)
    assert gray.shape == (3, 1, 8, 8)
    assert gray[0].mean().item() == pytest.approx(0.299 * 2 - 1, abs=0.01), "luminance of pure red"


def test_cifar10_missing_on_disk_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="CIFAR-10 not found under .*download=True"):
        load_images(f"cifar10:{tmp_path}", image_size=32, channels=3)


def test_corrupt_image_is_named(tmp_path):
    write_image(tmp_path / "good.png", np.zeros((8, 8)), "L")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="broken.png"):
        load_images(f"folder:{tmp_path}", image_size=8, channels=1)


@pytest.mark.parametrize("name, kwargs, message", [
    ("mnist", {}, "unknown dataset"),
    ("folder:", {}, "unknown dataset"),
    ("digits", {"image_size": 12}, "power of two"),
    ("digits", {"image_size": 4}, "power of two"),
    ("digits", {"channels": 4}, "channels must be 1"),
    ("digits", {"limit": 0}, "limit"),
])
def test_bad_requests_are_input_errors(name, kwargs, message):
    with pytest.raises(InputError, match=message):
        load_images(name, **{"image_size": 16, "channels": 1, **kwargs})


def test_missing_and_empty_folders_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_images(f"folder:{tmp_path / 'nowhere'}", image_size=8, channels=1)
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match="no image files"):
        load_images(f"folder:{tmp_path}", image_size=8, channels=1)
