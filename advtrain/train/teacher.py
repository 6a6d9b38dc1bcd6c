"""The frozen teacher of the distillation objectives (``ard``, ``rslad``, ``gkl_kd``): config and loading.

A config names its teacher in a ``teacher:`` section, in one of two forms::

    teacher: {robustbench: Cui2023Decoupled_WRN-34-10, model_dir: checkpoints, threat_model: Linf}
    teacher: {checkpoint: runs/teacher/last.pt, arch: wrn-16-2}

- ``robustbench``: ``<model_dir>/<dataset>/<threat_model>/NAME.pt`` built by RobustBench's zoo entry
  for NAME and read by our own loader (:func:`advtrain.hub.loader.load_zoo`: tensors only, every
  check), which must already be there: nothing is downloaded (a missing file is a one-line error
  naming the path). Exports written by ``advtrain export`` in ``model_dir`` are registered first
  (their ``.advtrain.json`` validated), so the quickstart's export works too. Ensembles are refused.
- ``checkpoint``: an advtrain training checkpoint or a plain state_dict (e.g. an export), read as
  tensors only and loaded strictly; ``arch`` defaults to the one the checkpoint (or the export's
  ``NAME.advtrain.json``) records.

Before training, :func:`check_teacher` refuses a teacher whose logits do not have the dataset's
number of classes, that outputs probabilities, or that classifies the per-epoch test images at
chance level (the sign of a model that expects normalised or 0-255 inputs: RobustBench-format
models take images in [0, 1] and normalise inside).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch
from torch import nn

from advtrain.errors import CheckpointError, InputError
from advtrain.hub.loader import freeze



def describe(section: Dict[str, Any]) -> str:
    """``robustbench NAME`` / ``checkpoint PATH``, for messages."""
    if "robustbench" in section:
        return f"RobustBench model {section['robustbench']!r}"
    return f"checkpoint {section['checkpoint']!r}"


def load_teacher(section: Dict[str, Any], dataset: str, device="cpu") -> nn.Module:
    """The teacher of a validated ``teacher:`` section, frozen, in eval mode, on ``device``.

    Loaded by :mod:`advtrain.hub.loader`, the loader eval, export, average and resume use, with
    every load-time check before anything is built.
    """
    return freeze(_load(section, dataset, device).model)


def _load(section: Dict[str, Any], dataset: str, device="cpu"):
    from advtrain.hub.loader import load_model_file, load_zoo

    if "robustbench" in section:
        return load_zoo(section["robustbench"], dataset=dataset, threat_model=section["threat_model"],
                        model_dir=section["model_dir"], device=device, what="teacher ")
    return load_model_file(section["checkpoint"], dataset=dataset, arch=section.get("arch"),
                           device=device, what="teacher checkpoint ")


def teacher_file(section: Dict[str, Any], dataset: str) -> str:
    """The file a validated ``teacher:`` section names."""
    if "robustbench" in section:
        from advtrain.hub.zoo import zoo_path

        return str(zoo_path(section["model_dir"], section["robustbench"], dataset,
                            section["threat_model"]))
    return os.fspath(section["checkpoint"])


def identity(section: Optional[Dict[str, Any]], dataset: str) -> Optional[Dict[str, str]]:
    """``{"file", "sha256"}`` of the teacher's weights file (None without a teacher); the trainer
    records it in every checkpoint as ``teacher`` so a resume can tell the teacher is the same."""
    if section is None:
        return None
    from advtrain.io.safeload import file_sha256

    path = teacher_file(section, dataset)
    return {"file": path, "sha256": file_sha256(path)}


def check_identity(recorded: Any, section: Optional[Dict[str, Any]], dataset: str,
                   where: str) -> None:
    """Refuse to resume with a teacher file that changed since the run started (even with
    ``--force``: the distilled targets would change mid-run). Checkpoints that record no teacher
    (an earlier release) are not checked; a missing file is reported by :func:`load_teacher`."""
    if not isinstance(recorded, dict) or section is None:
        return
    if not os.path.isfile(teacher_file(section, dataset)):
        return
    now = identity(section, dataset)
    if now["sha256"] != recorded.get("sha256"):
        raise CheckpointError(
            f"cannot resume: the teacher file {now['file']} changed since the run started (sha256 "
            f"{str(recorded.get('sha256'))[:12]}... in {where}, {now['sha256'][:12]}... now); put "
            "the original teacher back or start a new run")


@torch.no_grad()
def check_teacher(teacher: nn.Module, num_classes: int, what: str, test=None,
                  device="cpu", batch_size: int = 256) -> Optional[float]:
    """Refuse a teacher that does not fit the dataset (classes, probabilities, input range);
    returns its clean accuracy on ``test`` (None when ``test`` has under 100 images)."""
    from advtrain.eval.sanity import check_probability_outputs

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
    from advtrain.eval.evaluator import accuracy

    xs, ys = test
    acc = accuracy(teacher, xs.to(device), ys.to(device), batch_size=batch_size, progress=False)
    if acc < 1.5 / num_classes:
        raise InputError(f"teacher ({what}) classifies {acc:.1%} of {len(ys)} test images correctly "
                         f"(chance {1 / num_classes:.1%}): it expects other inputs than images in [0, 1] "
                         "(RobustBench-format models normalise inside) or another dataset")
    return acc


__all__ = ["load_teacher", "check_teacher", "describe", "identity",
           "check_identity", "teacher_file"]
