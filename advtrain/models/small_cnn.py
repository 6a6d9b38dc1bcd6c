"""GradAlign's small CNN: the model on which catastrophic overfitting shows in a single layer.

Andriushchenko & Flammarion 2020 ("Understanding and Improving Fast Adversarial Training", §3.3 and
Fig. 11) show FGSM training collapsing even for a one-layer CNN; their ``models.CNN``
(tml-epfl/understanding-fast-adv-training, ``models.py``) is ``n_conv`` blocks of a 3x3 convolution
(stride 1, padding 1, bias) and a ReLU at the input's full resolution, then a flattening and one
linear layer. Its registry name is ``cnn-<layers>x<filters>`` (``cnn-1x4``: the paper's 4-filter
model; ``cnn-1x16``: ``train.py``'s default width). PyTorch's default initialisation, as there.
Inputs are images in [0, 1] of ``input_size`` x ``input_size`` pixels (no normalisation, as there).
"""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """``layers`` x (3x3 conv with ``filters`` outputs + ReLU), flatten, linear to ``num_classes``."""

    def __init__(self, layers: int = 1, filters: int = 16, num_classes: int = 10, input_size: int = 32,
                 in_channels: int = 3) -> None:
        super().__init__()
        blocks = []
        for i in range(layers):
            blocks += [nn.Conv2d(in_channels if i == 0 else filters, filters, 3, stride=1, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(filters * input_size * input_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))
