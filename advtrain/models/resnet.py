"""CIFAR ResNet-18 (He et al., CVPR 2016) with the common ``kuangliu``/RobustBench ``ResNet`` keys.

Post-activation BasicBlocks, 3x3 stem without max-pool, widths 64/128/256/512::

    block(x) = relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x)),  s = identity or Sequential(conv1x1, BN)
    logits = linear(global_avgpool(layer4(layer3(layer2(layer1(relu(bn1(conv1(x)))))))))

``strides`` are the per-stage strides; ``width`` (64) the first stage's width (small values for CPU tests). The registry's ``resnet-18`` is LBGAT's natural model
``ResNet18_cifar`` (SPEC §4.4): strides (1, 1, 2, 2) with an 8x8 final map. ``strides=(1, 2, 2, 2)``
is RobustBench's / kuangliu's ``ResNet18`` (4x4 final map). Both pool globally on 32x32 inputs, so the
head is written as a global average pool. Same state-dict keys either way. PyTorch default init,
no input normalisation.

Example::

    natural = ResNet(num_classes=100)            # LBGAT f_n
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advtrain.errors import InputError

LBGAT_STRIDES = (1, 1, 2, 2)


class BasicBlock(nn.Module):
    """Post-activation block; projection shortcut ``shortcut.0`` (conv) / ``shortcut.1`` (BN)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with ``num_blocks`` BasicBlocks per stage; see the module docstring."""

    def __init__(self, num_classes: int = 10, num_blocks: Sequence[int] = (2, 2, 2, 2),
                 strides: Sequence[int] = LBGAT_STRIDES, width: int = 64):
        super().__init__()
        if len(num_blocks) != 4 or len(strides) != 4 or min(num_blocks) < 1:
            raise InputError(f"ResNet needs 4 stages with >= 1 block each, got num_blocks={tuple(num_blocks)} "
                             f"strides={tuple(strides)}")
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        for i, (planes, n, stride) in enumerate(zip(widths, num_blocks, strides)):
            blocks = [BasicBlock(in_planes if j == 0 else planes, planes, stride if j == 0 else 1) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = planes
        self.linear = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
