"""WideResNet-D-W with RobustBench ``WideResNet`` state-dict keys (TRADES / AWP / LBGAT / DKL layout).

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016; the TRADES variant used by the
adversarial-training literature. ``n = (D-4)/6`` pre-activation BasicBlocks per group, widths
``16W, 32W, 64W``, strides 1/2/2::

    block(x) = conv2(relu(bn2(conv1(h)))) + s(x),   h = relu(bn1(x)),
    s(x) = x                     if C_in == C_out   (identity on the *raw* input)
    s(x) = convShortcut(h)       otherwise          (1x1 strided conv on the pre-activated input)
    logits = fc(avgpool_8(relu(bn1(block3(block2(block1(conv1(x))))))))

No input normalisation (inputs in [0,1] go straight into ``conv1``), no dropout, BN momentum 0.1.
Init (SPEC §8): conv ~ N(0, 2/(k^2 C_out)), BN gamma=1 beta=0, linear bias 0, linear weight PyTorch default.
``sub_block1=True`` adds the unused TRADES/LBGAT ``sub_block1`` group so those checkpoints load strictly.

Example::

    net = WideResNet(depth=34, widen_factor=10, num_classes=10)   # == RobustBench Cui2023Decoupled_WRN-34-10
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advtrain.errors import InputError


class BasicBlock(nn.Module):
    """Pre-activation basic block; attribute names mirror RobustBench (``convShortcut``, ``equalInOut``)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(h)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.equalInOut else self.convShortcut(h))


def block_stack(block, n: int, in_planes: int, out_planes: int, stride: int, *args) -> nn.Sequential:
    """``n`` blocks ``block(in, out, stride, *args)`` under keys ``<i>.*``; only the first changes
    width / stride (both RobustBench WRN families)."""
    return nn.Sequential(*[block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                                 *args) for i in range(n)])


class NetworkBlock(nn.Module):
    """A group of ``nb_layers`` blocks; only the first changes width / stride (keys ``layer.<i>.*``)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = block_stack(BasicBlock, nb_layers, in_planes, out_planes, stride, drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for 32x32 inputs in [0,1]; see the module docstring."""

    def __init__(self, depth: int = 34, num_classes: int = 10, widen_factor: int = 10, sub_block1: bool = False,
                 drop_rate: float = 0.0, bias_last: bool = True):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0 or widen_factor < 1:
            raise InputError(f"invalid WideResNet depth={depth} width={widen_factor}: need (depth-4) % 6 == 0, "
                             "depth >= 10 and width >= 1 (e.g. wrn-16-2, wrn-34-10)")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        if sub_block1:  # unused in forward; present only so TRADES-era checkpoints load with strict=True
            self.sub_block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], num_classes, bias=bias_last)
        self.nChannels = ch[3]
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8).flatten(1)
        return self.fc(out)


def _init_weights(model: nn.Module) -> None:
    """He-normal convs with fan = k^2 * C_out, BN (1, 0), linear bias 0 (TRADES / RobustBench init)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
