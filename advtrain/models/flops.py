"""Forward FLOPs of a model: 2 x multiply-adds of every Conv2d and Linear, counted with forward hooks.

``FLOPs = 2 * sum_conv(N * C_out * H_out * W_out * C_in/groups * k_h * k_w) + 2 * sum_linear(N * in * out)``.
Attention blocks (any module with a ``qkv`` Linear and ``num_heads``: timm's ViT/DeiT/Swin/XCiT-style
``Attention``) add their two batched matmuls, ``softmax(Q K^T) V``: ``2 * 2 * B * N^2 * C`` for an
input of B sequences of N tokens and C = q/k width (``qkv.out_features / 3``), whether timm runs them
fused (``scaled_dot_product_attention``) or not. BatchNorm, LayerNorm, activations, softmax, pooling
and additions are ignored (they are < 1 % for ResNets/WRNs, a few % for ViTs).

Example::

    count_flops(create_model("wrn-34-10"))   # ~ 1.16e10 per 32x32 image
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_flops", "forward_flops"]


def count_flops(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """FLOPs of one forward pass on a zero input of ``input_size`` (batch included), in eval mode."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * out.numel() * k

    def linear_hook(module: nn.Linear, inp, _out) -> None:
        nonlocal total
        total += 2 * (inp[0].numel() // module.in_features) * module.in_features * module.out_features

    def attention_hook(module: nn.Module, inp, _out) -> None:
        nonlocal total
        x = inp[0]
        if x.dim() == 3:  # (B, N, C_in)
            width = module.qkv.out_features // 3
            total += 2 * 2 * x.shape[0] * x.shape[1] ** 2 * width

    handles = []
    for m in model.modules():
        if isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "num_heads"):
            handles.append(m.register_forward_hook(attention_hook))
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    param = next(model.parameters(), None)
    x = torch.zeros(input_size, device=param.device if param is not None else "cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


forward_flops = count_flops
