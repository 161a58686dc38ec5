import numpy as np
import pytest
import torch
from PIL import Image

from sklearn.datasets import load_digits

from diffprune_core.data import load_examples, load_images, subset_indices
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


def test_digits_carry_their_labels_and_refuse_an_rgb_model():
    examples = load_examples("digits", image_size=8, channels=1, limit=5, seed=0)
    assert examples.labels.tolist() == load_digits().target[subset_indices(1797, 5, 0)].tolist()
    with pytest.raises(InputError, match="digits holds grayscale .* the model takes RGB"):
        load_images("digits", image_size=8, channels=3, limit=4)


def write_image(path, array, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


def test_folder_images_are_read_recursively_cropped_and_never_converted(tmp_path):
    wide_red = np.zeros((20, 40, 3)); wide_red[:, 10:30, 0] = 255  # red only in the central square
    write_image(tmp_path / "a.png", wide_red, "RGB")
    write_image(tmp_path / "nested" / "c.png", np.zeros((16, 16, 4)), "RGBA")  # the alpha channel is dropped
    (tmp_path / "notes.txt").write_text("not an image")

    rgb = load_examples(f"folder:{tmp_path}", image_size=8, channels=3)
    assert rgb.images.shape == (2, 3, 8, 8) and rgb.labels is None and rgb.captions is None
    assert torch.allclose(rgb.images[0, 0], torch.ones(8, 8)), "the center crop keeps only the red square"
    assert torch.allclose(rgb.images[0, 1:], -torch.ones(2, 8, 8))
    assert torch.equal(rgb.images[1], -torch.ones(3, 8, 8))
    with pytest.raises(InputError, match="a.png holds RGB .* the model takes grayscale"):
        load_images(f"folder:{tmp_path}", image_size=8, channels=1)
    write_image(tmp_path / "nested" / "b.png", np.full((16, 16), 255), "L")
    with pytest.raises(InputError, match="b.png holds grayscale"):
        load_images(f"folder:{tmp_path}", image_size=8, channels=3)


def test_class_subfolders_give_labels_in_sorted_order(tmp_path):
    for name in ("zebra/1.png", "apple/1.png", "apple/2.png", "mango/x/1.png"):
        write_image(tmp_path / name, np.zeros((8, 8)), "L")
    examples = load_examples(f"folder:{tmp_path}", image_size=8, channels=1)
    assert examples.labels.tolist() == [0, 0, 1, 2]  # apple/1, apple/2, mango/x/1, zebra/1
    assert examples.subset([3, 0]).labels.tolist() == [2, 0]
    write_image(tmp_path / "loose.png", np.zeros((8, 8)), "L")
    assert load_examples(f"folder:{tmp_path}", image_size=8, channels=1).labels is None, "an image outside a class"


def test_metadata_jsonl_gives_captions(tmp_path):
    for name in ("b.png", "sub/a.png"):
        write_image(tmp_path / name, np.zeros((8, 8, 3)), "RGB")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "sub/a.png", "text": "an apple"}\n\n'
                                             '{"file_name": "b.png", "text": "a bee"}\n')
    examples = load_examples(f"folder:{tmp_path}", image_size=8, channels=3)
    assert examples.captions == ["a bee", "an apple"] and examples.labels is None
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "b.png", "text": "a bee"}\n')
    with pytest.raises(InputError, match="no caption for sub/a.png"):
        load_examples(f"folder:{tmp_path}", image_size=8, channels=3)
    (tmp_path / "metadata.jsonl").write_text("not json\n")
    with pytest.raises(InputError, match="line 1"):
        load_examples(f"folder:{tmp_path}", image_size=8, channels=3)


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
