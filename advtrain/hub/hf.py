"""Loading an ``advtrain export --format hub`` folder with huggingface_hub's standard API.

``AdvtrainModel.from_pretrained("path/to/folder")`` (or a Hub repo id) reads ``config.json``
(``arch``, ``dataset``, ``options``: the :func:`advtrain.models.create_model` arguments that
rebuild the architecture) and ``model.safetensors`` (no pickle), strictly: every weight must be
present and used. Inputs are images in [0, 1]; the network normalises inside when its recipe does.
Needs the ``huggingface_hub`` package (``pip install advtrain[hub]``); writing the folder does not.
"""
from __future__ import annotations

from typing import Optional

from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from advtrain.models import create_model


class AdvtrainModel(nn.Module, PyTorchModelHubMixin):
    """An advtrain architecture as a huggingface_hub model (weights under ``model.``)."""

    def __init__(self, arch: str, dataset: str, options: Optional[dict] = None):
        super().__init__()
        self.arch, self.dataset = arch, dataset
        self.model = create_model(arch, dataset=dataset, **(options or {}))

    def forward(self, x):
        return self.model(x)

    @classmethod
    def _from_pretrained(cls, **kwargs):
        kwargs["strict"] = True  # huggingface_hub's default (False) would leave weights unloaded
        model = super()._from_pretrained(**kwargs)
        return model.eval()
