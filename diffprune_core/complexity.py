"""#Params and MACs, in the paper's convention and with the attention matmuls added.

The paper's MACs are Torch-Pruning's hook counter at batch size 1: convolutions and linears only.
Self- and cross-attention also multiply Q by K^T and the attention map by V; those matmuls are
reported separately, so both conventions stand side by side. :func:`pipeline_complexity` adds the
other components of a pipeline: the MACs of generating one image are the U-Net's times the steps
(twice with classifier-free guidance), plus one decoding and one prompt encoding.
"""
import contextlib
import io

import torch
import torch_pruning as tp
from diffusers.models.attention_processor import Attention

from .architectures import example_inputs
from .pipeline import as_diffusion_model


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def pipeline_params(model) -> int:
    """#Params of all the networks of a DiffusionModel (U-Net, autoencoder, text encoder)."""
    return sum(count_params(module) for module in as_diffusion_model(model).components().values())


@torch.no_grad()
def count_macs(model, inputs: dict) -> dict:
    """{'params', 'macs' (paper: convs + linears), 'attention_macs', 'macs_with_attention'} at the inputs' batch."""
    with contextlib.redirect_stdout(io.StringIO()):  # its "No positional inputs found" notice
        macs, params = tp.utils.count_ops_and_params(model, inputs)
    attention = [0]

    def hook(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        queries = hidden.shape[-2] * hidden.shape[-1] if hidden.ndim == 4 else hidden.shape[1]
        keys = queries if context is None else context.shape[1]
        batch = hidden.shape[0]
        attention[0] += batch * queries * keys * (module.to_q.out_features + module.to_v.out_features)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules() if isinstance(m, Attention)]
    try:
        model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return {"params": int(params), "macs": int(macs), "attention_macs": int(attention[0]),
            "macs_with_attention": int(macs + attention[0])}


class Decoder(torch.nn.Module):
    """An autoencoder's decoding alone, as a module the MACs counter can call."""

    def __init__(self, autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, latents):
        return self.autoencoder.decode(latents).sample


@torch.no_grad()
def pipeline_complexity(model, *, steps: int, guidance: bool = False) -> dict:
    """Params and MACs (the paper's convention, batch 1) of each component of a DiffusionModel, and of
    generating one image by ``steps`` DDIM steps: {'unet': {...}, 'autoencoder': {...}, 'text_encoder': {...},
    'params': all components, 'macs_per_image': total}."""
    model = as_diffusion_model(model)
    unet = count_macs(model.unet, example_inputs(model))
    parts = {"unet": {key: unet[key] for key in ("params", "macs")}}
    macs = unet["macs"] * steps * (2 if guidance else 1)
    if model.autoencoder is not None:
        latents = torch.randn(1, *model.latent_shape, device=model.device)
        decoded = count_macs(Decoder(model.autoencoder), {"latents": latents})["macs"]
        parts["autoencoder"] = {"params": count_params(model.autoencoder), "macs": decoded}  # MACs: decoding
        macs += decoded
    if model.text_encoder is not None:
        ids = torch.zeros(1, model.tokenizer.model_max_length, dtype=torch.long, device=model.device)
        encoded = count_macs(model.text_encoder, {"input_ids": ids})["macs"]
        parts["text_encoder"] = {"params": count_params(model.text_encoder), "macs": encoded}
        macs += encoded
    return {**parts, "params": pipeline_params(model), "macs_per_image": macs,
            "steps": steps, "guidance": guidance}
