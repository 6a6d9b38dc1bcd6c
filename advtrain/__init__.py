"""advtrain: adversarial training and robustness evaluation for PyTorch.

Public API (imported lazily so ``import advtrain`` stays cheap):

- ``advtrain.create_model`` / ``advtrain.list_models`` -- the model zoo (RobustBench layouts)
- ``advtrain.evaluate`` -- clean + AutoAttack robust accuracy of a model
- ``advtrain.fit`` -- train from a config
"""
from __future__ import annotations

import warnings as _warnings

# Two deprecation notices raised inside third-party imports we cannot change (robustbench 1.1.1
# imports pkg_resources; its timm import touches torch.jit.interface). Silenced by exact message
# so every advtrain command does not print them; nothing else is filtered.
_warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
_warnings.filterwarnings("ignore", message=r"`torch\.jit\.interface` is deprecated",
                         category=FutureWarning)

__version__ = "0.1.0"

_LAZY = {
    "create_model": ("advtrain.models", "create_model"),
    "list_models": ("advtrain.models", "list_models"),
    "evaluate": ("advtrain.eval.evaluator", "evaluate"),
    "fit": ("advtrain.train.loop", "fit"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'advtrain' has no attribute {name!r}")
