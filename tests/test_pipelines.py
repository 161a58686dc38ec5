"""Any diffusers pipeline through every command: tiny local DDPM, LDM (VQModel), class-conditional LDM
(diffprune's ClassLDMPipeline) and Stable Diffusion layouts (AutoencoderKL, a CLIP text encoder and tokenizer
made here), class-conditional and bare conditional U-Nets.

prune -> finetune -> sample -> evaluate through the CLI on each; the written pipeline folders load in diffusers;
bad input (wrong channels, captions for a class model, labels for a text model, an empty prompt file, a missing
component) is one ``error:`` line.
"""
import json
import shutil
import time

import pytest
import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel, UNet2DModel

from diffprune_core.checkpoints import load_model, load_unet
from diffprune_core.cli import main
from diffprune_core.criteria import accumulate_gradients
from diffprune_core.data import load_examples
from diffprune_core.errors import InputError
from diffprune_core.sampling import ddim_sample
from diffprune_core.training import TrainConfig, train
from tiny_pipelines import LAYOUTS, tiny_pipeline, write_images

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args) -> int:
    return main([str(arg) for arg in args])


def report(folder) -> dict:
    return json.loads((folder / "report.json").read_text())


@pytest.fixture
def layouts(tmp_path):
    """Every tiny pipeline layout with the data it trains on."""
    data = {"ddpm": "digits", "ddim": "digits", "ldm": write_images(tmp_path / "rgb", 8), "class-ldm": "digits",
            "sd": write_images(tmp_path / "captioned", 8, captions=True)}
    return {layout: (tiny_pipeline(layout, tmp_path / layout), data[layout]) for layout in LAYOUTS}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prune_finetune_sample_evaluate_round_trip(layout, layouts, tmp_path):
    folder, data = layouts[layout]
    started = time.perf_counter()
    assert run("prune", "--model", folder, "--criterion", "diff-pruning", "--ratio", 0.3, "--threshold", 0.05,
               "--stride", 250, "--batch-size", 4, "--data", data, "--out", tmp_path / "pruned") == 0
    pruned = report(tmp_path / "pruned")
    assert pruned["pipeline"] == load_model(str(folder)).pipeline
    assert pruned["params_after"] < pruned["params_before"]
    assert pruned["pipeline_params_before"] - pruned["pipeline_params_after"] == (pruned["params_before"]
                                                                                   - pruned["params_after"])
    assert pruned["conditioning"] == {"sd": "the given prompts", "class-ldm": "the given class labels (through the class "
                                      "embedder's cross-attention token)"}.get(layout, "none (unconditional)")
    assert (tmp_path / "pruned" / "model_index.json").is_file() and (tmp_path / "pruned" / "unet" / "widths.json").is_file()
    assert not list((tmp_path / "pruned").rglob("*.bin")), "safetensors and JSON only"

    assert run("finetune", "--model", tmp_path / "pruned", "--data", data, "--steps", 2, "--batch-size", 2,
               "--out", tmp_path / "ft") == 0
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\n\na blue ring\n")
    conditioning = {"sd": ("--prompts", prompts), "class-ldm": ("--class-labels", "3,1,4")}.get(layout, ())
    assert run("sample", "--model", tmp_path / "ft" / "model", "--n", 3, "--seed", 1, "--steps", 2,
               *conditioning, "--out", tmp_path / "samples") == 0
    sampled = report(tmp_path / "samples")
    model = load_model(str(tmp_path / "ft" / "model"))
    assert sampled["shape"] == [3, *model.image_shape], "samples are decoded images, not latents"
    assert run("evaluate", "--model", tmp_path / "ft" / "model", "--reference", folder, "--data", data, "--n", 4,
               "--seed", 0, "--steps", 2, "--latency-repeats", 1, *conditioning, "--out", tmp_path / "eval") == 0
    evaluated = report(tmp_path / "eval")
    assert 0 < evaluated["ssim_to_reference"] < 1 and evaluated["fid"]["value"] > 0
    parts = evaluated["pipeline_complexity"]
    assert parts["unet"]["macs"] == evaluated["macs"]
    assert parts["macs_per_image"] > 2 * evaluated["macs"] or layout in ("ddpm", "ddim")
    print(f"{layout} round trip: {time.perf_counter() - started:.1f} s")


@pytest.mark.parametrize("layout", ["ldm", "sd"])
def test_pruned_pipeline_loads_in_diffusers_with_its_pruned_unet(layout, layouts, tmp_path):
    folder, data = layouts[layout]
    assert run("prune", "--model", folder, "--criterion", "magnitude", "--ratio", 0.3, "--out", tmp_path / "p") == 0
    unet = load_unet(str(tmp_path / "p"))
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "p", unet=unet)
    assert pipe.unet is unet and type(pipe).__name__ == load_model(str(folder)).pipeline
    extra = {"prompt": ["a red square"], "guidance_scale": 1.0} if layout == "sd" else {"batch_size": 1}
    images = pipe(num_inference_steps=2, output_type="np", **extra).images
    assert images.shape == (1, 16, 16, 3)


def test_latent_gradients_diffuse_the_encoded_batch(layouts):
    """Algorithm 1 on a latent model: L_t is measured on latents E(x) * scaling_factor, not on the images."""
    model = load_model(str(layouts["ldm"][0]))
    images = load_examples(layouts["ldm"][1], image_size=16, channels=3).images[:4]
    report = accumulate_gradients(model, images, threshold=0.0, stride=500, progress=False)
    latents = model.encode(images)
    assert latents.shape == (4, *model.latent_shape)
    alphas = model.schedule.alphas_cumprod
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        noisy = alphas[500].sqrt() * latents + (1 - alphas[500]).sqrt() * noise
        expected = torch.nn.functional.mse_loss(model.unet(noisy, torch.full((4,), 500)).sample, noise).item()
    assert report.losses[500] == pytest.approx(expected, rel=1e-5)


def test_stable_diffusion_schedule_and_prompts_come_from_the_pipeline(layouts):
    model = load_model(str(layouts["sd"][0]))
    assert model.schedule.config.beta_schedule == "scaled_linear"
    assert not model.schedule.config.clip_sample, "latents are not clipped to [-1, 1] (PNDM's config has no such key)"
    assert load_model(str(layouts["ddpm"][0])).schedule.config.clip_sample
    with_prompt, said = model.conditions(2, prompts=["a red square", "a blue ring"])
    empty, said_empty = model.conditions(2)
    assert said == "the given prompts" and said_empty == "the empty prompt"
    assert with_prompt["encoder_hidden_states"].shape == (2, 8, 16)
    assert not torch.equal(with_prompt["encoder_hidden_states"], empty["encoder_hidden_states"])
    guided = ddim_sample(model, n=2, seed=0, steps=2, prompts=["a red square"] * 2, guidance_scale=3.0, progress=False)
    plain = ddim_sample(model, n=2, seed=0, steps=2, prompts=["a red square"] * 2, progress=False)
    assert guided.shape == plain.shape and not torch.equal(guided, plain)


@pytest.fixture
def class_unet_dir(tmp_path):
    torch.manual_seed(0)
    UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                norm_num_groups=4, num_class_embeds=10, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D")).save_pretrained(tmp_path / "class")
    return tmp_path / "class"


def test_class_conditional_unet_through_the_cli(class_unet_dir, tmp_path):
    assert run("prune", "--model", class_unet_dir, "--criterion", "taylor", "--stride", 250, "--batch-size", 4,
               "--out", tmp_path / "p") == 0
    assert report(tmp_path / "p")["conditioning"] == "the given class labels"
    assert run("finetune", "--model", tmp_path / "p", "--data", "digits", "--steps", 2, "--batch-size", 2,
               "--out", tmp_path / "ft") == 0
    assert run("sample", "--model", tmp_path / "ft" / "model", "--n", 2, "--seed", 0, "--steps", 2,
               "--class-labels", "3,7", "--out", tmp_path / "s3") == 0
    assert report(tmp_path / "s3")["conditioning"] == "the given class labels"
    assert run("sample", "--model", tmp_path / "ft" / "model", "--n", 2, "--seed", 0, "--steps", 2,
               "--out", tmp_path / "s") == 0
    assert report(tmp_path / "s")["conditioning"] == "class labels drawn from seed 0"
    model = load_model(str(tmp_path / "ft" / "model"))
    threes = ddim_sample(model, n=2, seed=0, steps=2, labels=[3, 3], progress=False)
    sevens = ddim_sample(model, n=2, seed=0, steps=2, labels=[7, 7], progress=False)
    assert not torch.equal(threes, sevens), "the labels reach the U-Net"


def test_bare_conditional_unet_uses_null_encoder_states(tiny_cond_unet, tmp_path):
    tiny_cond_unet.save_pretrained(tmp_path / "cond")
    folder = write_images(tmp_path / "rgb", 4)
    assert run("prune", "--model", tmp_path / "cond", "--criterion", "diff-pruning", "--stride", 250,
               "--batch-size", 4, "--data", folder, "--out", tmp_path / "p") == 0
    assert report(tmp_path / "p")["conditioning"] == "null (zero) encoder states"
    assert run("sample", "--model", tmp_path / "p", "--n", 2, "--seed", 0, "--steps", 2, "--out", tmp_path / "s") == 0
    assert isinstance(load_unet(str(tmp_path / "p")), UNet2DConditionModel)


def bad(capsys, *args) -> str:
    assert run(*args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_writes_nothing(layouts, class_unet_dir, tmp_path, capsys):
    out = tmp_path / "never"
    ldm, ldm_data = layouts["ldm"]
    sd, sd_data = layouts["sd"]
    ddpm, _ = layouts["ddpm"]
    gray = write_images(tmp_path / "gray", 2, mode="L")
    gray_captioned = write_images(tmp_path / "gray-captioned", 2, mode="L", captions=True)
    labelled = write_images(tmp_path / "labelled", 4, classes=2)
    empty, prompts = tmp_path / "empty.txt", tmp_path / "prompts.txt"
    empty.write_text("\n\n")
    prompts.write_text("a red square\n")
    prune = ("prune", "--criterion", "diff-pruning", "--stride", 500, "--batch-size", 2, "--out", out)
    assert "grayscale" in bad(capsys, *prune, "--model", ldm, "--data", gray)
    assert "RGB" in bad(capsys, *prune, "--model", ddpm, "--data", ldm_data)
    assert "grayscale" in bad(capsys, "finetune", "--model", ldm, "--data", "digits", "--steps", 1, "--out", out)
    assert "captions" in bad(capsys, *prune, "--model", class_unet_dir, "--data", gray_captioned)
    assert "class labels" in bad(capsys, *prune, "--model", sd, "--data", labelled)
    sample = ("sample", "--n", 2, "--seed", 0, "--steps", 1, "--out", out)
    assert "no prompt" in bad(capsys, *sample, "--model", sd, "--prompts", empty)
    assert "no text encoder" in bad(capsys, *sample, "--model", ldm, "--prompts", prompts)
    assert "no class labels" in bad(capsys, *sample, "--model", ldm, "--class-labels", "1")
    assert "[0, 9]" in bad(capsys, *sample, "--model", class_unet_dir, "--class-labels", "12")
    assert "guidance" in bad(capsys, *sample, "--model", class_unet_dir, "--guidance-scale", 2)
    assert "integers" in bad(capsys, *sample, "--model", class_unet_dir, "--class-labels", "three")
    broken = tmp_path / "broken"
    shutil.copytree(sd, broken)
    shutil.rmtree(broken / "vae")
    assert "misses its vae/" in bad(capsys, *sample, "--model", broken)
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    assert "holds a 'KandinskyPipeline'; diffprune reads DDPMPipeline" in bad(capsys, *sample, "--model", broken)
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_class_ldm_reads_the_class_through_its_embedder_and_trains_it(layouts, tmp_path):
    """ClassLDMPipeline (CompVis's class LDM): labels -> ClassEmbedder -> the U-Net's one cross-attention token;
    Algorithm 1, sampling and training all go through it, and fine-tuning trains the embedder with the U-Net."""
    model = load_model(str(layouts["class-ldm"][0]))
    assert model.pipeline == "ClassLDMPipeline" and model.class_labels() == ("labels", 10)
    conditions, said = model.conditions(3, labels=[3, 1, 4])
    assert said == "the given class labels (through the class embedder's cross-attention token)"
    expected = model.class_embedder.embedding.weight[[3, 1, 4]][:, None]
    assert torch.equal(conditions["encoder_hidden_states"], expected) and "class_labels" not in conditions
    examples = load_examples("digits", image_size=16, channels=1, limit=4)
    assert torch.equal(model.data_conditions(examples)[0], examples.labels)
    losses = [accumulate_gradients(model, examples.images, stride=500, labels=labels, progress=False).losses[500]
              for labels in ([0, 1, 2, 3], [4, 5, 6, 7])]
    assert losses[0] != losses[1], "the labels reach the U-Net"
    assert model.class_embedder.embedding.weight.grad is None, "Algorithm 1 differentiates the U-Net only"
    first = ddim_sample(model, n=2, seed=0, steps=2, labels=[1, 2], progress=False)
    assert first.shape == (2, 1, 16, 16)
    assert not torch.equal(first, ddim_sample(model, n=2, seed=0, steps=2, labels=[5, 6], progress=False))
    before = model.class_embedder.embedding.weight.detach().clone()
    train(model, examples.images, TrainConfig.cpu(steps=2, batch_size=4), tmp_path / "train", progress=False,
          labels=examples.labels)
    assert not torch.equal(model.class_embedder.embedding.weight, before), "the class embedder trains with the U-Net"
    reloaded = load_model(str(tmp_path / "train" / "model"))
    assert torch.equal(reloaded.class_embedder.embedding.weight, model.class_embedder.embedding.weight)
    with pytest.raises(InputError, match=r"need 2 class labels in \[0, 9\]"):
        model.conditions(2, labels=[1, 10])


def test_class_ldm_training_resumes_to_the_same_embedder(layouts, tmp_path):
    examples = load_examples("digits", image_size=16, channels=1, limit=8)
    config = TrainConfig.cpu(steps=4, batch_size=4, checkpoint_every=2)
    straight = load_model(str(layouts["class-ldm"][0]))
    train(straight, examples.images, config, tmp_path / "straight", progress=False, labels=examples.labels)
    resumed = load_model(str(layouts["class-ldm"][0]))
    train(resumed, examples.images, TrainConfig.cpu(steps=2, batch_size=4, checkpoint_every=2), tmp_path / "resumed",
          progress=False, labels=examples.labels)
    resumed = load_model(str(layouts["class-ldm"][0]))
    train(resumed, examples.images, config, tmp_path / "resumed", progress=False, labels=examples.labels)
    for a, b in ((straight.unet, resumed.unet), (straight.class_embedder, resumed.class_embedder)):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name


def test_a_hub_id_fetches_configs_and_safetensors_only(layouts, monkeypatch, capsys, tmp_path):
    """Hub ids go through huggingface_hub's snapshot_download (offline here: a stand-in returns a local copy)."""
    import huggingface_hub

    asked = {}

    def snapshot_download(repo_id, allow_patterns):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns)
        if repo_id == "nobody/nothing":
            raise OSError("Repository Not Found for url: https://huggingface.co/api/models/nobody/nothing\nmore")
        return str(layouts["ldm"][0])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert load_model("CompVis/ldm-celebahq-256").pipeline == "LDMPipeline"
    assert asked == {"repo_id": "CompVis/ldm-celebahq-256", "allow_patterns": ["*.json", "*.safetensors", "*.txt"]}
    message = bad(capsys, "sample", "--model", "nobody/nothing", "--n", 1, "--seed", 0, "--out", tmp_path / "never")
    assert "cannot fetch nobody/nothing from the hub (OSError: Repository Not Found" in message
