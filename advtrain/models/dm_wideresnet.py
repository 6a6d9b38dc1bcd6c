"""WideResNet-D-W with SiLU and in-model normalisation: RobustBench ``DMWideResNet`` state-dict keys.

Gowal et al. 2020/2021 (DeepMind) and Wang et al. 2023 ("Better diffusion models further improve
adversarial training", DM-Improves-AT) use this variant; DKL's WRN-28-10 synthetic-data models too.
``n = (D-4)/6`` blocks per group, widths ``16W, 32W, 64W``, strides 1/2/2, activation ``act`` (SiLU)::

    z = (x - mean) / std                                  (mean/std: persistent=False buffers)
    block(x) = conv_1(act(batchnorm_1(conv_0(pad(h))))) + s(x),   h = act(batchnorm_0(x))
    pad = zero-pad (1,1,1,1) for stride 1, (0,1,0,1) for stride 2  (TF "SAME"; conv_0 has padding 0)
    s(x) = x if C_in == C_out else shortcut(h)            (1x1 strided conv)
    logits = logits(avgpool_8(act(batchnorm(layer(init_conv(z))))))

BN momentum 0.01 (DM training code; not part of the state dict). PyTorch default init.
Inputs are in [0,1]; ``mean``/``std`` are the dataset statistics (SPEC §8) and are not saved.

Example::

    net = DMWideResNet(num_classes=100, depth=28, width=10, mean=CIFAR100_MEAN, std=CIFAR100_STD)
"""
from __future__ import annotations

from typing import Sequence, Type

import torch
import torch.nn.functional as F
from torch import nn

from advtrain.data.names import DATASET_MEAN, DATASET_STD
from advtrain.errors import InputError
from advtrain.models.wideresnet import block_stack

# RobustBench's dm_wide_resnet names for the statistics owned by advtrain.data.names
CIFAR10_MEAN, CIFAR10_STD = DATASET_MEAN["cifar10"], DATASET_STD["cifar10"]
CIFAR100_MEAN, CIFAR100_STD = DATASET_MEAN["cifar100"], DATASET_STD["cifar100"]

_BN_MOMENTUM = 0.01


class _Block(nn.Module):
    """Pre-activation block with explicit "SAME" padding before the (possibly strided) first conv."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation_fn: Type[nn.Module] = nn.SiLU):
        super().__init__()
        if stride not in (1, 2):
            raise InputError(f"unsupported stride {stride}; DMWideResNet blocks use stride 1 or 2")
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=_BN_MOMENTUM)
        self.relu_0 = activation_fn()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=_BN_MOMENTUM)
        self.relu_1 = activation_fn()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False) if self.has_shortcut else None
        self._pad = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu_0(self.batchnorm_0(x))
        out = self.conv_0(F.pad(h, self._pad))
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        return out + (self.shortcut(h) if self.has_shortcut else x)


class _BlockGroup(nn.Module):
    """``num_blocks`` blocks (keys ``block.<i>.*``); only the first changes width / stride."""

    def __init__(self, num_blocks: int, in_planes: int, out_planes: int, stride: int,
                 activation_fn: Type[nn.Module] = nn.SiLU):
        super().__init__()
        self.block = block_stack(_Block, num_blocks, in_planes, out_planes, stride, activation_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(nn.Module):
    """DeepMind WRN for 32x32 inputs in [0,1]; normalises inside ``forward``. See the module docstring."""

    def __init__(self, num_classes: int = 10, depth: int = 28, width: int = 10,
                 activation_fn: Type[nn.Module] = nn.SiLU, mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD, num_input_channels: int = 3):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
            raise InputError(f"invalid DMWideResNet depth={depth} width={width}: need (depth-4) % 6 == 0, "
                             "depth >= 10 and width >= 1 (e.g. wrn-16-2-silu, wrn-28-10-silu)")
        # persistent=False: dataset statistics are configuration, not weights (RobustBench convention)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(num_input_channels, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(num_input_channels, 1, 1),
                             persistent=False)
        n = (depth - 4) // 6
        ch = [16, 16 * width, 32 * width, 64 * width]
        self.init_conv = nn.Conv2d(num_input_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            _BlockGroup(n, ch[0], ch[1], 1, activation_fn),
            _BlockGroup(n, ch[1], ch[2], 2, activation_fn),
            _BlockGroup(n, ch[2], ch[3], 2, activation_fn),
        )
        self.batchnorm = nn.BatchNorm2d(ch[3], momentum=_BN_MOMENTUM)
        self.relu = activation_fn()
        self.logits = nn.Linear(ch[3], num_classes)
        self.num_channels = ch[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.init_conv((x - self.mean) / self.std)
        out = self.relu(self.batchnorm(self.layer(out)))
        out = F.avg_pool2d(out, 8).flatten(1)
        return self.logits(out)
