"""Saving and loading without pickle: safetensors + JSON, bit-for-bit, with clear errors on bad folders."""
import json

import pytest
import torch
from diffusers import UNet2DModel

from diffprune_core.architectures import example_inputs
from diffprune_core.checkpoints import WEIGHTS, WIDTHS, load_unet, save_unet
from diffprune_core.criteria import StructureImportance
from diffprune_core.errors import InputError
from diffprune_core.pruner import prune_unet


@pytest.mark.parametrize("fixture", ["tiny_unet", "tiny_cond_unet"])
def test_pruned_model_reloads_bit_for_bit(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    inputs = example_inputs(model, batch_size=2)
    prune_unet(model, StructureImportance("random"), ratio=0.3, inputs=inputs)
    save_unet(model, tmp_path / "pruned")
    reloaded = load_unet(str(tmp_path / "pruned"))
    with torch.no_grad():
        assert torch.equal(model(**inputs).sample, reloaded(**inputs).sample)
    widths = json.loads((tmp_path / "pruned" / WIDTHS).read_text())
    assert widths["layers"]["conv_in"] == [model.conv_in.in_channels, model.conv_in.out_channels]


def test_dense_model_is_an_ordinary_diffusers_folder(tiny_unet, tmp_path):
    save_unet(tiny_unet, tmp_path / "dense")
    reloaded = UNet2DModel.from_pretrained(tmp_path / "dense")
    for (name, a), (_, b) in zip(tiny_unet.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_diffusers_folder_loads_and_a_unet_folder_without_model_index_is_named(tiny_unet, tmp_path):
    tiny_unet.save_pretrained(tmp_path / "pipe" / "unet")
    assert isinstance(load_unet(str(tmp_path / "pipe" / "unet")), UNet2DModel)
    with pytest.raises(InputError, match="no model_index.json: give .*unet for the U-Net alone"):
        load_unet(str(tmp_path / "pipe"))


def test_corrupt_weights_give_one_line_error(tiny_unet, tmp_path):
    save_unet(tiny_unet, tmp_path / "m")
    (tmp_path / "m" / WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot read weights") as err:
        load_unet(str(tmp_path / "m"))
    assert "\n" not in str(err.value)


def test_widths_that_do_not_fit_the_weights(tiny_unet, tmp_path):
    save_unet(tiny_unet, tmp_path / "m")
    spec = json.loads((tmp_path / "m" / WIDTHS).read_text())
    spec["layers"]["conv_in"] = [1, 8]
    (tmp_path / "m" / WIDTHS).write_text(json.dumps(spec))
    with pytest.raises(InputError, match="do not fit"):
        load_unet(str(tmp_path / "m"))


@pytest.mark.parametrize("source", ["./no/such/folder", "/no/such/folder", "paper:imagenet-64"])
def test_missing_models(source):
    with pytest.raises(InputError):
        load_unet(source)


def test_folder_without_config(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        load_unet(str(tmp_path))


def test_save_refuses_a_non_empty_folder_and_leaves_nothing_on_failure(tiny_unet, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        save_unet(tiny_unet, tmp_path / "taken")
    with pytest.raises(AttributeError):
        save_unet(object(), tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
