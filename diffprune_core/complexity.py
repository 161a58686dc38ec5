"""#Params and MACs, in the paper's convention and with the attention matmuls added.

The paper's MACs are Torch-Pruning's hook counter at batch size 1: convolutions and linears only.
Self- and cross-attention also multiply Q by K^T and the attention map by V; those matmuls are
reported separately, so both conventions stand side by side.
"""
import contextlib
import io

import torch
import torch_pruning as tp
from diffusers.models.attention_processor import Attention


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


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
