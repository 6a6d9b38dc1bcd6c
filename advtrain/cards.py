"""RobustBench result cards and the advtrain sidecar next to them.

``write_card(result, name=..., dataset=..., threat_model=..., architecture=...)`` writes

- ``<out_dir>/<dataset>/<threat_model>/<name>.json``: exactly the fields of
  ``robustbench.utils.ModelInfo`` that RobustBench's own Linf/L2 cards use, accuracies as
  percentage strings with two decimals (``0.8531 -> "85.31"``), eps as ``"8/255"``;
- ``<name>.advtrain.json`` beside it: per-attack accuracies, timings, flags, sanity report,
  package versions, checkpoint SHA-256, command line, seed, n_ex and date.

Both are written atomically, so a crash never leaves a half-written file.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from advtrain.errors import InputError, unknown
from advtrain.io import atomic_write_text, check_model_name, file_sha256
from advtrain.utils import format_eps, git_commit, package_versions

THREAT_MODELS = ("Linf", "L2")
DATASETS = ("cifar10", "cifar100", "imagenet", "imagefolder")


def display_arch(arch: str) -> str:
    """RobustBench's spelling of an architecture name (``wrn-34-10 -> WideResNet-34-10``)."""
    parts = arch.split("-")
    if parts[0] == "wrn" and len(parts) >= 3:
        return "WideResNet-" + "-".join(parts[1:3])  # RobustBench writes no "-SiLU"
    names = {"preact": "PreActResNet", "resnet": "ResNet"}
    if parts[0] in names:
        tail = parts[2:] if parts[0] == "preact" else parts[1:]
        return names[parts[0]] + ("-" + "-".join(tail) if tail else "")
    return arch


def percent(fraction: float) -> str:
    """RobustBench's accuracy string: a fraction in [0,1] as a percentage with two decimals."""
    return f"{100.0 * float(fraction):.2f}"


def card_fields(result: dict, *, name: str, dataset: str, architecture: str, title=None,
                venue: str = "", footnote=None, link: str = "", authors: str = "",
                additional_data: bool = False, number_forward_passes: int = 1) -> dict:
    """The card as a dict with RobustBench's key order (loads with ``ModelInfo(**card)``)."""
    robust = percent(result["robust_acc"])
    return {
        "link": link, "name": title or name, "authors": authors,
        "additional_data": bool(additional_data),
        "number_forward_passes": int(number_forward_passes), "dataset": dataset,
        "venue": venue, "architecture": architecture, "eps": format_eps(result["eps"]),
        "clean_acc": percent(result["clean_acc"]), "reported": robust, "autoattack_acc": robust,
        "footnote": footnote,
    }


def sidecar_fields(result: dict, *, name: str, dataset: str, threat_model: str,
                   command: Optional[Sequence[str]] = None, checkpoint=None,
                   extra: Optional[dict] = None) -> dict:
    """Everything needed to audit and reproduce the card's numbers."""
    keys = ("clean_acc", "robust_acc", "pgd_acc", "pgd_steps", "per_attack", "seconds", "flags",
            "sanity", "n_ex", "eps", "norm", "version", "attacks", "seed", "device")
    side = {"name": name, "dataset": dataset, "threat_model": threat_model,
            "eps_str": format_eps(result["eps"])}
    side.update({k: result[k] for k in keys if k in result})
    side["command"] = shlex.join(command) if command is not None else shlex.join(sys.argv)
    side["checkpoint"] = _checkpoint_info(checkpoint)
    side["versions"] = package_versions()
    side["git_commit"] = git_commit()
    side["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    side.update(extra or {})
    return side


def _checkpoint_info(checkpoint) -> Optional[dict]:
    if checkpoint is None:
        return None
    path = os.fspath(checkpoint)
    sha = file_sha256(path) if os.path.isfile(path) else None
    return {"path": os.path.abspath(path), "sha256": sha}


def write_card(result: dict, *, out_dir="model_info", name: str, dataset: str, threat_model: str,
               architecture: str, venue: str = "", footnote=None, link: str = "",
               authors: str = "", additional_data: bool = False, number_forward_passes: int = 1,
               command: Optional[Sequence[str]] = None, checkpoint=None, title=None,
               extra: Optional[dict] = None, overwrite: bool = True) -> tuple:
    """Write the RobustBench card and its sidecar; returns ``(card_path, sidecar_path)``.

    Refused (:class:`InputError`, nothing written) when the result carries a flag that makes its
    numbers meaningless (:data:`advtrain.checks.BLOCKING`, e.g. non-finite logits), or, with
    ``overwrite=False``, when the card already exists.
    """
    from advtrain.checks import BLOCKING

    _check_names(name, dataset, threat_model)
    if result.get("norm", threat_model) != threat_model:
        raise InputError(f"result is for {result['norm']} but threat_model is {threat_model!r}")
    blocking = [f for f in result.get("flags", ()) if f.get("code") in BLOCKING]
    if blocking:
        raise InputError(f"card not written: [{blocking[0]['code']}] {blocking[0]['message']} "
                         f"(see {blocking[0]['doc']})")
    folder = Path(out_dir) / dataset / threat_model
    if not overwrite and (folder / f"{name}.json").exists():
        raise InputError(f"card {folder / (name + '.json')} already exists; choose another name or "
                         "pass --overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    card = card_fields(result, name=name, dataset=dataset, architecture=architecture,
                       title=title, venue=venue, footnote=footnote, link=link, authors=authors,
                       additional_data=additional_data,
                       number_forward_passes=number_forward_passes)
    side = sidecar_fields(result, name=name, dataset=dataset, threat_model=threat_model,
                          command=command, checkpoint=checkpoint, extra=extra)
    card_path, side_path = folder / f"{name}.json", folder / f"{name}.advtrain.json"
    atomic_write_text(side_path, json.dumps(side, indent=2, default=_jsonable) + "\n")
    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    return card_path, side_path


def _check_names(name: str, dataset: str, threat_model: str) -> None:
    if dataset not in DATASETS:
        raise unknown("dataset", dataset, DATASETS)
    if threat_model not in THREAT_MODELS:
        raise unknown("threat model", threat_model, THREAT_MODELS)
    check_model_name(name, "card name")


def _jsonable(obj):
    """JSON fallback for tensors / numpy scalars / paths in a result dict."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
