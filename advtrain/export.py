"""Checkpoints in, RobustBench model_dir files out.

- :func:`model_from_checkpoint`: build the architecture and load a checkpoint strictly (our trainer
  format ``{"model", "ema", "arch", "dataset", ...}``, a plain state_dict, or a reference format
  via :func:`advtrain.io.filter_state_dict`). Nothing is ever unpickled.
- :func:`to_robustbench`: write ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` as a plain
  state_dict, which ``robustbench.utils.load_model(name, model_dir=...)`` loads strictly (it only
  strips ``module.``/``model.`` prefixes). For zoo names the file is loaded back through RobustBench
  and its logits must equal the model's bit for bit.
- :func:`load_zoo_model`: a RobustBench zoo architecture with a checkpoint already on disk, no
  download.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

import torch

from advtrain.errors import CheckpointError, InputError, unknown
from advtrain.io import (atomic_save, atomic_write_text, check_model_name, load_state_file,
                         load_weights)

WEIGHTS = ("model", "ema")
#: RobustBench datasets an export can target
EXPORT_DATASETS = ("cifar10", "cifar100", "imagenet")


def _unprefixed(key: str, dataset: str) -> str:
    """RobustBench strips then re-adds one leading ``model.`` on ImageNet checkpoints (the timm
    wrappers keep their network there); any other ``model.`` would be mangled."""
    return key[len("model."):] if dataset == "imagenet" and key.startswith("model.") else key


def _opt(options: dict) -> dict:
    return {"options": options} if options else {}


def model_from_checkpoint(path, *, dataset: str, arch: Optional[str] = None,
                          weights: str = "model", device="cpu") -> tuple:
    """Build ``arch`` (default: the one the checkpoint records) and load its weights strictly.

    Returns ``(model, info)`` with ``info = {"arch", "weights", "recorded": {...}}``.
    """
    if weights not in WEIGHTS:
        raise unknown("weights", weights, WEIGHTS)
    raw = load_state_file(path)
    state, recorded = _select_weights(raw, weights, path)
    arch = arch or recorded.get("arch")
    if not arch:
        from advtrain.models import list_models
        raise InputError(f"{os.fspath(path)} records no architecture; pass --arch "
                         f"(choices: {', '.join(list_models())})")
    if recorded.get("dataset") and recorded["dataset"] != dataset and not _folder_pair(recorded["dataset"], dataset):
        raise InputError(f"{os.fspath(path)} was trained on {recorded['dataset']!r} but "
                         f"--dataset is {dataset!r}; pass --dataset {recorded['dataset']}")
    from advtrain.models import create_model

    from advtrain.models.timm_models import recorded_options

    model = create_model(arch, dataset=dataset, **recorded_options({**raw, "arch": arch}))
    load_weights(model, state, strict=True, name=os.fspath(path))
    return model.to(device).eval(), {"arch": arch, "weights": weights, "recorded": recorded}


def _folder_pair(a: str, b: str) -> bool:
    """A model trained on an ImageFolder tree may be evaluated/exported as RobustBench's imagenet."""
    from advtrain.data.imagefolder import is_folder_dataset

    return is_folder_dataset(a) and is_folder_dataset(b)


def _select_weights(raw: Mapping, weights: str, path) -> tuple:
    """Pick the state_dict out of a trainer checkpoint; other formats pass through."""
    if isinstance(raw.get("model"), Mapping):
        state = raw.get(weights)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{os.fspath(path)} has no {weights!r} weights; use "
                                  "--weights model")
        recorded = {k: raw[k] for k in ("arch", "dataset", "num_classes") if k in raw}
        data = raw.get("config", {}).get("data", {}) if isinstance(raw.get("config"), Mapping) else {}
        if isinstance(data, Mapping) and (data.get("root") or data.get("test_npz")):
            recorded["test_data"] = {"root": data.get("root"), "npz": data.get("test_npz")}
        return state, recorded
    if weights != "model":
        raise CheckpointError(f"{os.fspath(path)} is a plain state_dict without EMA weights; "
                              "use --weights model")
    return raw, {}


# ----------------------------------------------------------------------------- RobustBench zoo
def zoo_entry(name: str, dataset: str, threat_model: str) -> Optional[dict]:
    """RobustBench's zoo entry (``{"model": constructor, "gdrive_id": ...}``) or None."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        table = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    except (ValueError, KeyError):
        return None
    return table.get(name)


def zoo_path(model_dir, name: str, dataset: str, threat_model: str) -> Path:
    """Where RobustBench looks for a local checkpoint (``name`` must be a safe file-name id)."""
    check_model_name(name, "--name")
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


def load_zoo_model(name: str, *, dataset: str, threat_model: str = "Linf",
                   model_dir="checkpoints", device="cpu") -> torch.nn.Module:
    """Zoo architecture + the checkpoint already at :func:`zoo_path`; never downloads."""
    entry = zoo_entry(name, dataset, threat_model)
    if entry is None:
        raise _unknown_zoo(name, dataset, threat_model)
    if isinstance(entry.get("gdrive_id"), list):
        raise InputError(f"RobustBench model {name!r} is an ensemble of checkpoints; evaluate it "
                         "with robustbench.utils.load_model instead")
    path = zoo_path(model_dir, name, dataset, threat_model)
    if not path.is_file():
        raise CheckpointError(f"RobustBench checkpoint not found at {path}; put {name}.pt there "
                              "(downloading is not attempted offline)")
    model = entry["model"]()
    model.arch_name = name
    load_weights(model, load_state_file(path), strict=True, name=str(path))
    return model.to(device).eval()


def _unknown_zoo(name, dataset, threat_model):
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        names = list(model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)])
    except (ValueError, KeyError):
        names = []
    return unknown(f"RobustBench {dataset}/{threat_model} model", name, names)


def to_robustbench(model: torch.nn.Module, name: str, dataset: str, threat_model: str = "Linf",
                   model_dir="checkpoints", *, overwrite: bool = False,
                   verify: bool = True) -> Path:
    """Write ``model`` where ``robustbench.utils.load_model(name, model_dir, dataset, ...)``
    finds it; for zoo names verify the round trip (identical logits) or raise and remove the file.

    For names outside the zoo the file is written and :func:`registration_hint` says how to use it.
    """
    if dataset not in EXPORT_DATASETS:
        raise unknown("dataset", dataset, EXPORT_DATASETS)
    if dataset == "imagenet" and "Standard" in name:  # load_model returns those without weights
        raise InputError(f"RobustBench loads no weights for ImageNet models named *Standard* "
                         f"({name!r}); choose a name without 'Standard'")
    if threat_model not in ("Linf", "L2"):
        raise unknown("threat model", threat_model, ("Linf", "L2"))
    path = zoo_path(model_dir, name, dataset, threat_model)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; remove it or pass --overwrite")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    mangled = [k for k in state if "module." in k or "model." in _unprefixed(k, dataset)]
    if mangled:
        raise CheckpointError(f"keys {mangled[:3]} contain 'module.'/'model.', which "
                              "robustbench.utils.load_model strips; rename those submodules")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(state, path)
    arch = getattr(model, "arch_name", None)
    entry = zoo_entry(name, dataset, threat_model)
    if (entry is None or _is_ours(entry)) and arch:
        # outside the zoo: record the architecture beside the weights so register_model_dir()
        # can teach RobustBench to build it, then verify through robustbench like a zoo name
        from advtrain.models.timm_models import build_options

        options = build_options(model)
        atomic_write_text(meta_path(model_dir, name, dataset, threat_model),
                          json.dumps({"name": name, "arch": arch, "dataset": dataset,
                                      "threat_model": threat_model, **_opt(options)}, indent=1) + "\n")
        register_robustbench(name, arch, dataset, threat_model, **options)
    if verify and zoo_entry(name, dataset, threat_model) is not None:
        try:
            verify_roundtrip(model, name, dataset, threat_model, model_dir)
        except Exception:
            path.unlink(missing_ok=True)
            raise
    return path


@torch.no_grad()
def verify_roundtrip(model, name: str, dataset: str, threat_model: str, model_dir,
                     n: int = 2) -> None:
    """Load ``name`` back through RobustBench and require bit-identical logits on random input."""
    from robustbench.utils import load_model

    try:
        loaded = load_model(name, model_dir=str(model_dir), dataset=dataset,
                            threat_model=threat_model)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"RobustBench cannot load the export as {name!r} (wrong "
                              f"architecture for this zoo name?): {first}") from None
    from advtrain.models.timm_models import probe_input

    device = next(model.parameters()).device
    x = probe_input(model, n).to(device)
    was_training = model.training
    model.eval()
    try:
        ours = model(x).cpu()
    finally:
        model.train(was_training)
    theirs = loaded.to(device).eval()(x).cpu()
    if ours.shape != theirs.shape or not torch.equal(ours, theirs):
        diff = (ours - theirs).abs().max().item() if ours.shape == theirs.shape else float("nan")
        raise CheckpointError(f"RobustBench's {name!r} gives different logits from the exported "
                              f"model (max |diff| = {diff:.3g}); the architectures differ")


def registration_hint(path, name: str, dataset: str, threat_model: str) -> str:
    """How to load an export whose name is not in RobustBench's zoo."""
    return (f"{name!r} is not in RobustBench's {dataset}/{threat_model} zoo; in Python, "
            f"advtrain.export.register_model_dir({str(Path(path).parents[2])!r}) teaches "
            "RobustBench its architecture, then robustbench.utils.load_model("
            f"{name!r}, model_dir={str(Path(path).parents[2])!r}, dataset={dataset!r}, "
            f"threat_model={threat_model!r}) loads it")


# ----------------------------------------------------------------------------- registering exports
#: ``gdrive_id`` of entries we add: RobustBench only needs it to be set; the file is local
LOCAL_ONLY = "advtrain-local-export"


def meta_path(model_dir, name: str, dataset: str, threat_model: str) -> Path:
    """``<name>.advtrain.json`` beside an export: the advtrain architecture that builds it."""
    check_model_name(name, "--name")
    return Path(model_dir) / dataset / threat_model / f"{name}.advtrain.json"


def _is_ours(entry) -> bool:
    return isinstance(entry, dict) and entry.get("gdrive_id") == LOCAL_ONLY


def register_robustbench(name: str, arch: str, dataset: str, threat_model: str = "Linf",
                         **options) -> None:
    """Add ``name`` (built by advtrain's ``arch``) to RobustBench's zoo table in this process, so
    ``robustbench.utils.load_model(name, model_dir=...)`` builds it and loads the local file.

    RobustBench's real zoo names are never replaced.
    """
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    from advtrain.models import create_model

    create_model(arch, dataset=dataset, **options)  # unknown arch / dataset -> one-line error now
    # RobustBench has no table for some pairs (e.g. cifar100/L2): create it, load_model reads it
    table = model_dicts[BenchmarkDataset(dataset)].setdefault(ThreatModel(threat_model), {})
    if name in table and not _is_ours(table[name]):
        raise InputError(f"{name!r} is already a RobustBench {dataset}/{threat_model} zoo model; "
                         "choose another name for your export")
    table[name] = {"model": lambda: create_model(arch, dataset=dataset, **options).eval(),
                   "gdrive_id": LOCAL_ONLY}


def register_model_dir(model_dir="checkpoints") -> list:
    """Register every advtrain export found in a RobustBench ``model_dir``; returns their names."""
    names = []
    for meta in sorted(Path(model_dir).glob("*/*/*.advtrain.json")):
        try:
            info = json.loads(meta.read_text())
            name, arch = info["name"], info["arch"]
            dataset, threat_model = info["dataset"], info["threat_model"]
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"{meta}: not an advtrain export description; delete it and "
                             "export again") from None
        register_robustbench(name, arch, dataset, threat_model, **info.get("options", {}))
        names.append(name)
    return names
