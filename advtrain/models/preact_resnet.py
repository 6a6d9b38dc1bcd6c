"""PreAct ResNet-18 (He et al., ECCV 2016) in the layout of Rice et al. 2020 / AWP / RobustBench.

Pre-activation BasicBlocks, widths 64/128/256/512, strides 1/2/2/2, final BN-ReLU (``bn``)::

    h = relu(bn1(x));  block(x) = conv2(relu(bn2(conv1(h)))) + s,  s = shortcut(h) or x
    logits = linear(avgpool_4(relu(bn(layer4(...layer1(conv1(x)))))))

The projection shortcut (``shortcut.0``, 1x1 conv, no BN) reads the *pre-activated* input h, as in
kuangliu's / Rice et al.'s ``PreActBlock`` (RobustBench: ``PreActResNet(PreActBlock, [2,2,2,2],
bn_before_fc=True, out_shortcut=True)``). PyTorch default init, no input normalisation. ``width`` (64) is the first stage's width (small values for CPU tests).

Example::

    net = PreActResNet18(num_classes=10)
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advtrain.errors import InputError


class PreActBlock(nn.Module):
    """Pre-activation basic block with ``bn1, conv1, bn2, conv2[, shortcut.0]`` keys."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))
        else:
            self.shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(h)
        out = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return out + skip


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for 32x32 inputs in [0,1]; see the module docstring."""

    def __init__(self, num_classes: int = 10, num_blocks: Sequence[int] = (2, 2, 2, 2), width: int = 64):
        super().__init__()
        if len(num_blocks) != 4 or min(num_blocks) < 1:
            raise InputError(f"PreActResNet needs 4 stages with >= 1 block each, got {tuple(num_blocks)}")
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        in_planes = width
        for i, (planes, n, stride) in enumerate(zip((width, 2 * width, 4 * width, 8 * width), num_blocks, (1, 2, 2, 2))):
            blocks = [PreActBlock(in_planes if j == 0 else planes, planes, stride if j == 0 else 1) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = planes
        self.bn = nn.BatchNorm2d(8 * width)
        self.linear = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
