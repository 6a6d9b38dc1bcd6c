"""revisiting-at's ConvStem (Singh, Croce & Hein, "Revisiting Adversarial Training for ImageNet",
NeurIPS 2023; ``model.not_original 1``): the patchify stem of a timm ConvNeXt or ViT replaced by a
stack of 3x3 stride-2 convolutions, each followed by a channels-first LayerNorm and a GELU.

What nmndeep/revisiting-at @ d7166c0 builds (utils_architecture.py):

- ConvNeXt (``ConvBlock1(48)``, :198-217, set as ``model.stem`` for convnext_tiny, :241-244):
  Conv3x3/s2 3->48, LN, GELU, Conv3x3/s2 48->96, LN, GELU (stride 4, 96 channels = ConvNeXt-T's
  first stage width; timm's stem is Conv4x4/s4 + LN);
- ViT (``ConvBlock(48, end_siz=8)``, :120-144, set as ``model.patch_embed.proj`` for vit_s, :271-275):
  Conv3x3/s2 3->48->96->192->384, each + LN + GELU, then Conv1x1 384->384 (stride 16, ViT-S's
  embedding width; timm's projection is Conv16x16/s16).

Every convolution has a bias, padding 1 (3x3) / 0 (1x1); the LayerNorm is the source's own
(:57-82: per-pixel mean and biased variance over channels, eps 1e-6, weight 1, bias 0 at init); the
convolutions keep PyTorch's default initialisation (the source builds the block after timm's model).
The module nests its layers under ``.stem`` as the source does, so the state-dict keys are the
source's (``stem.stem.0.weight``, ``patch_embed.proj.stem.0.weight``).

Widths for other models of the two families follow the same rule from the stage/embedding width
``d``: ConvNeXt ``d/2 -> d``, ViT ``d/8 -> d/4 -> d/2 -> d`` then 1x1 ``d -> d`` (ConvNeXt-T d = 96
and ViT-S d = 384 give exactly the source's 48/96 and 48/96/192/384).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from advtrain.errors import InputError


class ChannelsFirstLayerNorm(nn.Module):
    """revisiting-at's ``LayerNorm(data_format="channels_first")``: over the channels of N×C×H×W."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvStem(nn.Module):
    """3x3/s2 conv + LN + GELU for each width in ``widths`` (from 3 input channels), then a 1x1 conv
    to ``proj`` channels when given."""

    def __init__(self, widths: Sequence[int], proj: int | None = None):
        super().__init__()
        layers, c_in = [], 3
        for c in widths:
            layers += [nn.Conv2d(c_in, c, kernel_size=3, stride=2, padding=1), ChannelsFirstLayerNorm(c),
                       nn.GELU()]
            c_in = c
        if proj is not None:
            layers.append(nn.Conv2d(c_in, proj, kernel_size=1, stride=1, padding=0))
        self.stem = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


def convnext_widths(width: int) -> tuple:
    """ConvBlock1: two stride-2 convolutions to the first stage's ``width`` (96 -> (48, 96))."""
    return (width // 2, width)


def vit_widths(width: int) -> tuple:
    """ConvBlock(48, end_siz=8): four stride-2 convolutions to ``width`` (384 -> 48, 96, 192, 384)."""
    return (width // 8, width // 4, width // 2, width)


#: the timm modules of the model families the ConvStem applies to
FAMILIES = ("timm.models.convnext", "timm.models.vision_transformer")


def check_conv_stem_family(name: str) -> None:
    """A one-line :class:`InputError` unless ``timm:name`` is a ConvNeXt or a ViT (by the module of
    its timm entry point, without building it)."""
    import timm.models

    if timm.models.model_entrypoint(name).__module__ not in FAMILIES:
        raise InputError(f"model.conv_stem applies to timm ConvNeXt and ViT (16x16 patch) models, not "
                         f"timm:{name}; remove model.conv_stem or use e.g. timm:convnext_tiny")


def add_conv_stem(net: nn.Module, name: str) -> nn.Module:
    """Replace the patchify stem of the timm network ``net`` (``timm:name``) by the ConvStem, in place.

    A ConvNeXt gets a new ``stem``; a ViT with 16x16 patches a new ``patch_embed.proj``. Any other
    model is refused with a one-line :class:`InputError`."""
    from timm.models.convnext import ConvNeXt
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(net, ConvNeXt):
        width = net.stem[0].out_channels
        if width % 2:
            raise InputError(f"model.conv_stem: timm:{name}'s first stage has {width} channels, not a "
                             "multiple of 2; use a model whose width halves, e.g. timm:convnext_tiny")
        net.stem = ConvStem(convnext_widths(width))
        return net
    if isinstance(net, VisionTransformer) and isinstance(getattr(net.patch_embed, "proj", None), nn.Conv2d):
        proj = net.patch_embed.proj
        width = proj.out_channels
        if tuple(proj.kernel_size) != (16, 16) or tuple(proj.stride) != (16, 16) or width % 8:
            raise InputError(f"model.conv_stem: timm:{name} has {tuple(proj.kernel_size)} patches and "
                             f"width {width}; the ConvStem needs 16x16 patches and a width divisible by "
                             "8, e.g. timm:vit_small_patch16_224")
        net.patch_embed.proj = ConvStem(vit_widths(width), proj=width)
        return net
    raise InputError(f"model.conv_stem applies to timm ConvNeXt and ViT (16x16 patch) models, not "
                     f"timm:{name}; remove model.conv_stem or use e.g. timm:convnext_tiny")
