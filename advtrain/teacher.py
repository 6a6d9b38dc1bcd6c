"""The frozen teacher of the distillation objectives (``ard``, ``rslad``, ``gkl_kd``): config and loading.

A config names its teacher in a ``teacher:`` section, in one of two forms::

    teacher: {robustbench: Cui2023Decoupled_WRN-34-10, model_dir: checkpoints, threat_model: Linf}
    teacher: {checkpoint: runs/teacher/last.pt, arch: wrn-16-2}

- ``robustbench``: loaded with ``robustbench.utils.load_model(NAME, model_dir, dataset,
  threat_model)`` from ``<model_dir>/<dataset>/<threat_model>/NAME.pt``, which must already be there:
  nothing is downloaded (a missing file is a one-line error naming the path). Exports written by
  ``advtrain export`` in ``model_dir`` are registered first, so the quickstart's export works too.
  Ensembles (several checkpoints per name) are refused.
- ``checkpoint``: an advtrain training checkpoint or a plain state_dict (e.g. an export), read as
  tensors only and loaded strictly; ``arch`` defaults to the one the checkpoint (or the export's
  ``NAME.advtrain.json``) records.

Before training, :func:`check_teacher` refuses a teacher whose logits do not have the dataset's
number of classes, that outputs probabilities, or that classifies the per-epoch test images at
chance level (the sign of a model that expects normalised or 0-255 inputs: RobustBench-format
models take images in [0, 1] and normalise inside).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

from advtrain.errors import CheckpointError, InputError, unknown

FORMS = {"robustbench": {"robustbench": None, "model_dir": "checkpoints", "threat_model": "Linf"},
         "checkpoint": {"checkpoint": None, "arch": None}}
THREAT_MODELS = ("Linf", "L2")


def check_section(cfg) -> None:
    """Validate ``cfg.teacher`` against ``cfg.objective`` and fill in its defaults (in place)."""
    from advtrain.objectives import DISTILLATION, OBJECTIVES

    name, section = cfg.objective.get("name"), cfg.teacher
    if name not in OBJECTIVES:  # check_objective reports it
        return
    if section is None:
        if name in DISTILLATION:
            raise InputError(f"objective {name!r} distils from a teacher; add teacher: {{robustbench: "
                             "NAME, model_dir: checkpoints}} or teacher: {checkpoint: PATH} to the config")
        return
    if name not in DISTILLATION:
        raise InputError(f"config section 'teacher' is only used by the distillation objectives "
                         f"({', '.join(DISTILLATION)}); remove it or set objective.name")
    if not isinstance(section, dict):
        raise InputError("config section 'teacher' must be a mapping, e.g. teacher: {robustbench: NAME}")
    forms = [f for f in FORMS if f in section]
    if len(forms) != 1:
        raise InputError("config section 'teacher' needs exactly one of 'robustbench: NAME' or "
                         "'checkpoint: PATH'")
    allowed = FORMS[forms[0]]
    for key, value in section.items():
        if key not in allowed:
            raise unknown(f"key of teacher ({forms[0]} form)", f"teacher.{key}",
                          [f"teacher.{k}" for k in allowed])
        optional = value is None and key != forms[0]
        if not optional and (not isinstance(value, str) or not value):
            raise InputError(f"config key 'teacher.{key}' must be a non-empty string, got {value!r}")
    if section.get("threat_model", "Linf") not in THREAT_MODELS:
        raise unknown("teacher threat model (teacher.threat_model)", section["threat_model"],
                      THREAT_MODELS)
    cfg.teacher = {**allowed, **section}


def describe(section: Dict[str, Any]) -> str:
    """``robustbench NAME`` / ``checkpoint PATH``, for messages."""
    if "robustbench" in section:
        return f"RobustBench model {section['robustbench']!r}"
    return f"checkpoint {section['checkpoint']!r}"


def load_teacher(section: Dict[str, Any], dataset: str, device="cpu") -> nn.Module:
    """The teacher of a validated ``teacher:`` section, frozen, in eval mode, on ``device``."""
    if "robustbench" in section:
        model = _load_robustbench(section["robustbench"], dataset, section["threat_model"],
                                  section["model_dir"])
    else:
        model = _load_checkpoint(section["checkpoint"], dataset, section.get("arch"))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()


def _load_robustbench(name: str, dataset: str, threat_model: str, model_dir: str) -> nn.Module:
    from advtrain import export

    if dataset not in ("cifar10", "cifar100"):
        raise InputError(f"teacher.robustbench needs a RobustBench dataset (cifar10, cifar100), not "
                         f"{dataset!r}; use teacher: {{checkpoint: PATH}}")
    if Path(model_dir).is_dir():
        export.register_model_dir(model_dir)  # advtrain exports (e.g. the quickstart's)
    entry = export.zoo_entry(name, dataset, threat_model)
    if entry is None:
        raise export._unknown_zoo(name, dataset, threat_model)
    if isinstance(entry.get("gdrive_id"), list):
        raise InputError(f"teacher {name!r} is an ensemble of checkpoints; teacher ensembles are not "
                         "supported yet: choose a single model")
    path = export.zoo_path(model_dir, name, dataset, threat_model)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint {path} not found; put {name}.pt there (nothing is "
                              "downloaded; for the quickstart's export run sh/quickstart.sh first)")
    from robustbench.utils import load_model

    try:
        return load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    except (RuntimeError, ValueError, KeyError, OSError, EOFError) as e:  # torch.load weights_only
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"teacher {path}: robustbench.utils.load_model failed ({first[:200]}); "
                              f"check that the file is {name}'s checkpoint") from None


def _load_checkpoint(path: str, dataset: str, arch: Optional[str]) -> nn.Module:
    from advtrain.export import _select_weights
    from advtrain.io import load_state_file, load_weights
    from advtrain.models import create_model, list_models

    if not os.path.isfile(path):
        raise CheckpointError(f"teacher checkpoint {path!r} not found; fix teacher.checkpoint")
    state, recorded = _select_weights(load_state_file(path), "model", path)
    arch = arch or recorded.get("arch") or _export_arch(path)
    if not arch:
        raise InputError(f"teacher checkpoint {path!r} records no architecture; set teacher.arch "
                         f"(choices: {', '.join(list_models())})")
    if recorded.get("dataset") and recorded["dataset"] != dataset:
        raise InputError(f"teacher checkpoint {path!r} was trained on {recorded['dataset']!r} but "
                         f"data.dataset is {dataset!r}; use a teacher trained on {dataset}")
    model = create_model(arch, dataset=dataset)
    load_weights(model, state, strict=True, name=os.fspath(path))
    return model


def _export_arch(path: str) -> Optional[str]:
    """The architecture in ``NAME.advtrain.json`` beside an ``advtrain export`` file, if any."""
    meta = Path(path).with_suffix(".advtrain.json")
    try:
        return json.loads(meta.read_text()).get("arch")
    except (OSError, ValueError, AttributeError):
        return None


@torch.no_grad()
def check_teacher(teacher: nn.Module, num_classes: int, what: str, test=None,
                  device="cpu", batch_size: int = 256) -> Optional[float]:
    """Refuse a teacher that does not fit the dataset (classes, probabilities, input range);
    returns its clean accuracy on ``test`` (None when ``test`` has under 100 images)."""
    from advtrain.checks import check_probability_outputs

    teacher.eval()
    x = test[0][:batch_size] if test is not None else torch.rand(8, 3, 32, 32)
    logits = teacher(x.to(device))
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        raise InputError(f"teacher ({what}) outputs {tuple(logits.shape[1:])} logits per image but the "
                         f"dataset has {num_classes} classes; use a teacher trained on this dataset")
    if check_probability_outputs(logits.float()):
        raise InputError(f"teacher ({what}) outputs probabilities (rows summing to 1); distillation "
                         "needs logits: remove the teacher's final softmax")
    if test is None or len(test[1]) < 100:
        return None
    from advtrain.evaluation import accuracy

    xs, ys = test
    acc = accuracy(teacher, xs.to(device), ys.to(device), batch_size=batch_size, progress=False)
    if acc < 1.5 / num_classes:
        raise InputError(f"teacher ({what}) classifies {acc:.1%} of {len(ys)} test images correctly "
                         f"(chance {1 / num_classes:.1%}): it expects other inputs than images in [0, 1] "
                         "(RobustBench-format models normalise inside) or another dataset")
    return acc


__all__ = ["check_section", "load_teacher", "check_teacher", "describe"]
