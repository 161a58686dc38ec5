"""Tiny local copies of the pipeline layouts practitioners bring, built with random weights, no download.

- ``ddpm``: DDPMPipeline (a 1-channel 16x16 UNet2DModel and DDPMScheduler), the layout of google/ddpm-*;
- ``ddim``: DDIMPipeline (the same U-Net with a DDIMScheduler);
- ``ldm``: LDMPipeline (a VQModel with 3-channel 16x16 images and 3x8x8 latents, a UNet2DModel on them, and
  DDIMScheduler), the layout of CompVis/ldm-celebahq-256;
- ``class-ldm``: diffprune's ClassLDMPipeline (an AutoencoderKL with 1-channel 16x16 images and 3x8x8 latents,
  a pipeline.ClassEmbedder of 10 classes read through cross-attention by a UNet2DConditionModel, DDPMScheduler),
  the layout of data/latent_teacher and of CompVis's class-conditional LDM;
- ``sd``: StableDiffusionPipeline (AutoencoderKL with 4x8x8 latents, a CLIP text encoder and tokenizer made
  here from a letters-only vocabulary, a UNet2DConditionModel, PNDMScheduler), the layout of
  CompVis/stable-diffusion-v1-4.

``python tests/tiny_pipelines.py LAYOUT OUT`` writes OUT/pipeline, OUT/images (16x16 images the layout
trains on: captioned by metadata.jsonl for ``sd``) and OUT/prompts.txt: the README's quick try.
"""
import json
import string
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import (AutoencoderKL, DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, LDMPipeline, PNDMScheduler,
                       StableDiffusionPipeline, UNet2DConditionModel, UNet2DModel, VQModel)
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from diffprune_core.checkpoints import save_model
from diffprune_core.pipeline import ClassEmbedder, DiffusionModel, noise_scheduler

LAYOUTS = ("ddpm", "ddim", "ldm", "class-ldm", "sd")
CAPTIONS = ["a red square", "a blue ring", "green stripes", "a dark field"]
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def tiny_tokenizer(folder):
    """A CLIPTokenizer whose vocabulary is the letters (a word splits into letters: no merges)."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase)
    vocab = {token: i for i, token in enumerate(letters + [f"{c}</w>" for c in letters]
                                                + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)


def tiny_text_encoder(vocab_size: int):
    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=8,
                                        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                                        pad_token_id=vocab_size - 1)).eval()


def tiny_unet(in_channels: int, size: int, **extra):
    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=in_channels, out_channels=in_channels,
                       block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), **extra).eval()


def tiny_pipeline(layout: str, folder):
    """Write the tiny pipeline ``layout`` (see the module doc) into ``folder``; returns ``folder``."""
    torch.manual_seed(0)
    if layout == "ddpm":
        pipe = DDPMPipeline(unet=tiny_unet(1, 16), scheduler=DDPMScheduler(num_train_timesteps=1000))
    elif layout == "ddim":
        pipe = DDIMPipeline(unet=tiny_unet(1, 16), scheduler=DDIMScheduler(num_train_timesteps=1000))
    elif layout == "ldm":
        vqvae = VQModel(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, num_vq_embeddings=32, vq_embed_dim=3)
        pipe = LDMPipeline(vqvae=vqvae, unet=tiny_unet(3, 8),
                           scheduler=DDIMScheduler(**SCHEDULE, clip_sample=False))
    elif layout == "class-ldm":
        vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=3, block_out_channels=(8, 16),
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            norm_num_groups=4, sample_size=16)
        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                                    layers_per_block=1, norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")).eval()
        scheduler = {"_class_name": "DDPMScheduler", **SCHEDULE, "clip_sample": False}
        save_model(DiffusionModel(unet=unet, autoencoder=vae.eval(), class_embedder=ClassEmbedder(10, 8).eval(),
                                  schedule=noise_scheduler(scheduler), pipeline="ClassLDMPipeline",
                                  scheduler_config=scheduler), folder)
        return folder
    elif layout == "sd":
        tokenizer = tiny_tokenizer(folder.parent / f".{folder.name}-vocab")
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            norm_num_groups=4, sample_size=16)
        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                    layers_per_block=1, norm_num_groups=4, cross_attention_dim=16,
                                    attention_head_dim=4,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=tiny_text_encoder(len(tokenizer)), tokenizer=tokenizer,
                                       unet=unet, scheduler=PNDMScheduler(**SCHEDULE, skip_prk_steps=True, steps_offset=1),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        raise ValueError(layout)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def write_images(folder, count: int, *, mode: str = "RGB", classes: int = 0, captions: bool = False) -> str:
    """``count`` random 16x16 images in ``folder``: in ``classes`` sub-folders, or captioned by metadata.jsonl.

    Returns the ``--data`` argument that reads them.
    """
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        name = f"c{i % classes}/{i}.png" if classes else f"{i}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shape = (16, 16, 3) if mode == "RGB" else (16, 16)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(folder / name)
        lines.append(json.dumps({"file_name": name, "text": CAPTIONS[i % len(CAPTIONS)]}))
    if captions:
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return f"folder:{folder}"


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in LAYOUTS:
        sys.exit(f"usage: python {sys.argv[0]} {{{','.join(LAYOUTS)}}} OUT")
    layout, out = sys.argv[1], Path(sys.argv[2])
    tiny_pipeline(layout, out / "pipeline")
    if layout in ("ldm", "sd"):
        write_images(out / "images", 16, captions=layout == "sd")
    (out / "prompts.txt").write_text("\n".join(CAPTIONS) + "\n")
    print(f"wrote {out}/pipeline ({layout}), {out}/images and {out}/prompts.txt")
