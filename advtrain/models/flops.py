"""Forward FLOPs of a model: 2 x multiply-adds of every Conv2d and Linear, counted with forward hooks.

``FLOPs = 2 * sum_conv(N * C_out * H_out * W_out * C_in/groups * k_h * k_w) + 2 * sum_linear(N * in * out)``.
BatchNorm, activations, pooling and additions are ignored (they are < 1 % for ResNets/WRNs).

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

    handles = []
    for m in model.modules():
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
