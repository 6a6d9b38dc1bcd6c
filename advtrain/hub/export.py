"""Checkpoints in, RobustBench model_dir files out.

- :func:`to_robustbench`: write ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` as a plain
  state_dict, which ``robustbench.utils.load_model(name, model_dir=...)`` loads strictly (it only
  strips ``module.``/``model.`` prefixes), with its ``.advtrain.json`` description (names outside
  the zoo) and optionally a ``.safetensors`` copy, committed as one output
  (:func:`advtrain.io.atomic.commit_files`: the ``.pt`` appears last, so a rerun after a crash or a
  full disk sees no export and writes it again without ``--overwrite``). For zoo names the file is
  loaded back through RobustBench and its logits must equal the model's bit for bit.

Models are loaded by :mod:`advtrain.hub.loader` (the one loader); the zoo table and the sidecar
live in :mod:`advtrain.hub.zoo`, re-exported here for the export's callers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from advtrain.io.atomic import commit_files, safetensors_bytes, tensor_bytes
from advtrain.errors import CheckpointError, InputError, unknown
from advtrain.models.timm_models import build_options, probe_input
from advtrain.hub.zoo import (EXPORT_SUFFIXES, LOCAL_ONLY, ZOO_THREAT_MODELS, ZOO_DATASETS,  # noqa: F401
                          _is_ours, meta_path,
                          register_model_dir, register_robustbench, sidecar_text, zoo_entry, zoo_path)


def to_robustbench(model: torch.nn.Module, name: str, dataset: str, threat_model: str = "Linf",
                   model_dir="checkpoints", *, overwrite: bool = False, verify: bool = True,
                   safetensors: bool = False) -> Path:
    """Write ``model`` where ``robustbench.utils.load_model(name, model_dir, dataset, ...)``
    finds it; for zoo names verify the round trip (identical logits) or raise and remove the files.

    For names outside the zoo the file is written and :func:`registration_hint` says how to use it.
    """
    if dataset not in ZOO_DATASETS:
        raise unknown("dataset", dataset, ZOO_DATASETS)
    if ZOO_DATASETS[dataset] == "imagenet" and "Standard" in name:  # RobustBench's ImageNet: loaded without weights
        raise InputError(f"RobustBench loads no weights for ImageNet models named *Standard* "
                         f"({name!r}); choose a name without 'Standard'")
    if threat_model not in ZOO_THREAT_MODELS:
        raise unknown("threat model", threat_model, ZOO_THREAT_MODELS)
    path = zoo_path(model_dir, name, dataset, threat_model)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; remove it or pass --overwrite")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    mangled = [k for k in state if "module." in k or "model." in _unprefixed(k, dataset)]
    if mangled:
        raise CheckpointError(f"keys {mangled[:3]} contain 'module.'/'model.', which "
                              "robustbench.utils.load_model strips; rename those submodules")
    files = {path: lambda fh: torch.save(state, fh)}
    arch = getattr(model, "arch_name", None)
    entry = zoo_entry(name, dataset, threat_model)
    ours = (entry is None or _is_ours(entry)) and arch
    if ours:  # outside the zoo: the description lets register_model_dir() teach RobustBench
        files[meta_path(model_dir, name, dataset, threat_model)] = sidecar_text(
            name, arch, dataset, threat_model, build_options(model))
    if safetensors:
        files[path.with_suffix(".safetensors")] = safetensors_bytes(state, {"arch": arch or "",
                                                                            "dataset": dataset})
    commit_files(files, primary=path, size_hint=tensor_bytes(state))
    if ours:
        register_robustbench(name, arch, dataset, threat_model, build_options(model))
    if verify and zoo_entry(name, dataset, threat_model) is not None:
        try:
            verify_roundtrip(model, name, dataset, threat_model, model_dir)
        except Exception:
            for written in files:  # the .pt first: what is left reads as an unfinished export
                Path(written).unlink(missing_ok=True)
            raise
    return path


def _unprefixed(key: str, dataset: str) -> str:
    """RobustBench strips then re-adds one leading ``model.`` on ImageNet checkpoints (the timm
    wrappers keep their network there); any other ``model.`` would be mangled."""
    imagenet = ZOO_DATASETS.get(dataset) == "imagenet"  # RobustBench's name of the facts row
    return key[len("model."):] if imagenet and key.startswith("model.") else key


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
            f"advtrain.hub.export.register_model_dir({str(Path(path).parents[2])!r}) teaches "
            "RobustBench its architecture, then robustbench.utils.load_model("
            f"{name!r}, model_dir={str(Path(path).parents[2])!r}, dataset={dataset!r}, "
            f"threat_model={threat_model!r}) loads it")
