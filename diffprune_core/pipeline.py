"""The diffusion model as one object: a U-Net, its noise schedule, an optional autoencoder, its conditioning.

Every step of the library (Algorithm 1's losses, the L_t curve, DDIM sampling, fine-tuning,
LD-Pruner's generation, FID and SSIM) takes a :class:`DiffusionModel`, so that no step special-cases
pixel models. A bare U-Net stands for the pixel-space model with the paper's noise schedule
(:func:`as_diffusion_model`), which is how the paper's models and our digits teacher come.

- ``encode(images)``: the U-Net's input space. A pixel model takes the images themselves; a latent
  model (LDMPipeline's VQModel, Stable Diffusion's AutoencoderKL) z = scaling_factor * E(x), with
  the *mean* of AutoencoderKL's posterior, so that Algorithm 1's one batch is fixed.
- ``decode(samples)``: images in [-1, 1], D(z / scaling_factor) for a latent model.
- ``conditions(n, labels=, prompts=, seed=)``: the U-Net's keyword inputs for n samples, and a
  sentence that says what they are (it goes into every report.json):
  class labels (given, or drawn from the seed) for the U-Net's class embedding or, in a
  ``ClassLDMPipeline``, through the :class:`ClassEmbedder` component as the cross-attention input
  (the CompVis class-conditional LDM), prompts encoded by the CLIP text encoder (the empty
  prompt when none is given), or, for a U-Net that has no component to make them, null inputs:
  zero encoder states (a bare UNet2DConditionModel), zero class vectors (class_embed_type
  identity / projection), zero SDXL text_time inputs.
- ``schedule``: the DDPM noise schedule, from the pipeline's own scheduler config (Stable Diffusion
  uses a scaled-linear one); a bare U-Net gets the 1000-step linear schedule. Epsilon prediction only.
  DDIM clips its predicted x_0 to [-1, 1] where the config says so, by default for pixel models only:
  latents are not bounded.
"""
from dataclasses import dataclass, field

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .errors import InputError

# The pipelines diffprune reads, with the components each must have (their folder names).
PIPELINE_COMPONENTS = {
    "DDPMPipeline": ("unet", "scheduler"),
    "DDIMPipeline": ("unet", "scheduler"),
    "LDMPipeline": ("vqvae", "unet", "scheduler"),
    "StableDiffusionPipeline": ("vae", "text_encoder", "tokenizer", "unet", "scheduler"),
    "ClassLDMPipeline": ("vae", "class_embedder", "unet", "scheduler"),  # diffprune's; the CompVis class LDM
}
AUTOENCODER_COMPONENTS = ("vqvae", "vae")
ENCODE_BATCH = 64  # images per autoencoder call


def noise_scheduler(config: dict | None = None) -> DDPMScheduler:
    """The DDPM schedule of ``config`` (a diffusers scheduler config of any class), by default the
    1000-step linear schedule beta_t in [1e-4, 0.02] (Ho et al.): the one source of alphas_cumprod."""
    if config is None:
        return DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise InputError(f"the scheduler predicts {config['prediction_type']!r}; Diff-Pruning's loss (Eq. 2) and "
                         "diffprune need an epsilon-prediction model")
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "clip_sample",
            "set_alpha_to_one", "steps_offset")
    return DDPMScheduler.from_config({key: config[key] for key in keys if key in config})


class ClassEmbedder(ModelMixin, ConfigMixin):
    """CompVis's ClassEmbedder (ldm/modules/encoders): one learned vector per class, given to the U-Net as a
    single cross-attention token (B x 1 x embedding_dim). It trains with the U-Net, as CompVis's does."""

    @register_to_config
    def __init__(self, num_classes: int, embedding_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, embedding_dim)

    def forward(self, class_labels: torch.Tensor) -> torch.Tensor:
        return self.embedding(class_labels)[:, None, :]


def class_input(unet) -> tuple[str | None, int | None]:
    """How ``unet`` takes ``class_labels``: ('labels', number of classes) for an embedding table,
    ('scalar', None) for class_embed_type 'timestep' (a number through the sinusoidal projection),
    ('vector', size) for 'identity', 'projection' and 'simple_projection', or (None, None)."""
    if getattr(unet, "class_embedding", None) is None:
        return None, None
    kind = unet.config.get("class_embed_type")
    if kind is None:
        return "labels", unet.config.num_class_embeds
    if kind == "timestep":
        return "scalar", None
    if kind == "identity":
        return "vector", unet.time_embedding.linear_2.out_features
    return "vector", unet.config.projection_class_embeddings_input_dim


def text_time_sizes(unet) -> tuple[int, int]:
    """SDXL's added inputs (addition_embed_type 'text_time'): the pooled text size and the 6 time ids."""
    cfg = unet.config
    return cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim, 6


@dataclass(eq=False, kw_only=True)
class DiffusionModel:
    """A U-Net with what it needs around it (see the module doc); ``pipeline`` names the folder layout it came in."""
    unet: nn.Module
    schedule: DDPMScheduler = field(default_factory=noise_scheduler)
    autoencoder: nn.Module | None = None
    text_encoder: nn.Module | None = None
    tokenizer: object = None
    class_embedder: ClassEmbedder | None = None  # ClassLDMPipeline: class labels -> the cross-attention token
    pipeline: str | None = None  # the pipeline class of model_index.json; None for a bare U-Net
    scheduler_config: dict | None = None  # the pipeline's scheduler config as it was, written back on saving

    @property
    def latent_shape(self) -> tuple:
        """(C, H, W) of the U-Net's samples."""
        size = self.unet.config.sample_size
        return (self.unet.config.in_channels, *((size, size) if isinstance(size, int) else size))

    @property
    def image_shape(self) -> tuple:
        """(C, H, W) of the decoded images."""
        channels, height, width = self.latent_shape
        if self.autoencoder is None:
            return channels, height, width
        factor = 2 ** (len(self.autoencoder.config.block_out_channels) - 1)
        return self.autoencoder.config.in_channels, height * factor, width * factor

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device):
        for module in (self.unet, self.autoencoder, self.text_encoder, self.class_embedder):
            if module is not None:
                module.to(device)
        return self

    def components(self) -> dict:
        """The networks by their pipeline folder name (those of the U-Net, autoencoder, text encoder and class
        embedder that are present)."""
        autoencoder = "vqvae" if self.pipeline == "LDMPipeline" else "vae"
        return {name: module for name, module in
                (("unet", self.unet), (autoencoder, self.autoencoder), ("text_encoder", self.text_encoder),
                 ("class_embedder", self.class_embedder)) if module is not None}

    def class_labels(self) -> tuple[str | None, int | None]:
        """How this model takes class labels: ``class_input`` of its U-Net, or ('labels', number of classes)
        through its class embedder."""
        if self.class_embedder is not None:
            return "labels", self.class_embedder.config.num_classes
        return class_input(self.unet)

    def check_images(self, images: torch.Tensor) -> None:
        expected = self.image_shape
        if images.ndim != 4 or len(images) == 0 or tuple(images.shape[1:]) != expected:
            raise InputError(f"this model takes images of {' x '.join(map(str, expected))} (C x H x W), "
                             f"got a batch of {tuple(images.shape)}")

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images N x C x H x W in [-1, 1] -> the U-Net's input space (the same tensor for a pixel model)."""
        self.check_images(images)
        if self.autoencoder is None:
            return images
        ae = self.autoencoder
        parts = []
        for batch in images.split(ENCODE_BATCH):
            encoded = ae.encode(batch.to(self.device))
            z = encoded.latents if hasattr(encoded, "latents") else encoded.latent_dist.mode()
            shift = ae.config.get("shift_factor") or 0.0
            parts.append(((z - shift) * ae.config.scaling_factor).float().cpu())
        return torch.cat(parts)

    @torch.no_grad()
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """The U-Net's samples -> images in [-1, 1] (clamped), on the CPU."""
        if self.autoencoder is None:
            return samples.clamp(-1, 1)
        ae = self.autoencoder
        shift = ae.config.get("shift_factor") or 0.0
        parts = [ae.decode(batch.to(self.device) / ae.config.scaling_factor + shift).sample.float().cpu()
                 for batch in samples.split(ENCODE_BATCH)]
        return torch.cat(parts).clamp(-1, 1)

    @torch.no_grad()
    def encode_prompts(self, prompts: list) -> torch.Tensor:
        """CLIP text encoder states of ``prompts`` (padded to the tokenizer's length, as Stable Diffusion does)."""
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(tokens.input_ids.to(device))[0].float()

    def conditions(self, n: int, *, labels=None, prompts=None, seed: int = 0) -> tuple[dict, str]:
        """The U-Net's keyword inputs for n samples (tensors with n rows), and what they are, in words."""
        cfg = self.unet.config
        if cfg.get("addition_embed_type") not in (None, "text_time"):
            raise InputError(f"addition_embed_type {cfg.addition_embed_type!r} (image or hint inputs, as in Kandinsky) "
                             "is not supported; diffprune conditions on class labels, text and SDXL's text_time")
        if cfg.get("encoder_hid_dim_type") not in (None, "text_proj"):
            raise InputError(f"encoder_hid_dim_type {cfg.encoder_hid_dim_type!r} (image embeddings) is not supported")
        kind, size = self.class_labels()
        if labels is not None and kind not in ("labels", "scalar"):
            raise InputError("class labels given, but this U-Net takes "
                             + ("no class labels" if kind is None else f"class vectors of size {size}"))
        if prompts is not None and self.text_encoder is None:
            raise InputError("prompts given, but this model has no text encoder (a text-to-image pipeline has one)")
        kwargs, said = {}, []
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long)
            upper = size - 1 if kind == "labels" else labels.max()
            if labels.shape != (n,) or labels.min() < 0 or labels.max() > upper:
                raise InputError(f"need {n} class labels in [0, {upper}], got {labels.tolist()[:8]}...")
            kwargs["class_labels"] = labels
            said.append("the given class labels")
        elif kind == "labels":
            kwargs["class_labels"] = torch.randint(size, (n,), generator=torch.Generator().manual_seed(seed))
            said.append(f"class labels drawn from seed {seed}")
        elif kind == "scalar":
            kwargs["class_labels"] = torch.zeros(n, dtype=torch.long)
            said.append("null (zero) class labels")
        elif kind == "vector":
            kwargs["class_labels"] = torch.zeros(n, size)
            said.append("null (zero) class vectors")
        if self.class_embedder is not None:  # the labels go in through cross-attention, not the U-Net's class input
            labels = kwargs.pop("class_labels")
            kwargs["encoder_hidden_states"] = self.class_embedder(labels.to(self.class_embedder.device))
            said[-1] += " (through the class embedder's cross-attention token)"
        elif isinstance(self.unet, UNet2DConditionModel):
            if self.text_encoder is not None:
                kwargs["encoder_hidden_states"] = self.encode_prompts(prompts if prompts is not None else [""] * n)
                said.append("the given prompts" if prompts is not None else "the empty prompt")
            else:
                kwargs["encoder_hidden_states"] = torch.zeros(n, 1, cfg.encoder_hid_dim or cfg.cross_attention_dim)
                said.append("null (zero) encoder states")
            if cfg.addition_embed_type == "text_time":
                text, time_ids = text_time_sizes(self.unet)
                kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros(n, text), "time_ids": torch.zeros(n, time_ids)}
                said.append("null (zero) SDXL text_time inputs")
        return kwargs, "; ".join(said) or "none (unconditional)"

    def data_conditions(self, examples) -> tuple:
        """(labels, prompts) of ``examples`` (data.Examples) that this model takes: labels for a model with a
        class-label embedding, captions for a text model. The data's labels or captions are ignored by a
        model that takes neither; captions for a class model and labels for a text model are errors."""
        kind, _ = self.class_labels()
        takes_labels = kind in ("labels", "scalar")
        if examples.captions is not None and self.text_encoder is None and takes_labels:
            raise InputError("the data has captions, but this model is conditioned on class labels (give images in "
                             "one sub-folder per class, or digits / cifar10)")
        if examples.labels is not None and self.text_encoder is not None:
            raise InputError("the data has class labels, but this model is conditioned on text (give a folder with "
                             "metadata.jsonl captions)")
        return (examples.labels if takes_labels else None,
                examples.captions if self.text_encoder is not None else None)

    def null_conditions(self, n: int) -> dict:
        """The unconditional inputs of classifier-free guidance: the empty prompt's encoder states."""
        if self.text_encoder is None:
            raise InputError("classifier-free guidance (--guidance-scale other than 1) needs a text-to-image model, "
                             "whose empty prompt is its null conditioning")
        kwargs, _ = self.conditions(n, seed=0)
        return kwargs


def as_diffusion_model(model) -> DiffusionModel:
    """``model`` itself, or a bare U-Net as the pixel-space model with the default schedule."""
    return model if isinstance(model, DiffusionModel) else DiffusionModel(unet=model)


def rows_of(value, n: int, rows):
    """The ``rows`` of a per-sample input (leading dimension n; dicts of them, e.g. SDXL's added inputs)."""
    if isinstance(value, dict):
        return {key: rows_of(item, n, rows) for key, item in value.items()}
    return value[rows] if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n else value


def to_device(value, device):
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    return value.to(device) if isinstance(value, torch.Tensor) else value
