"""Checkpoints in, RobustBench model_dir files out.

- :func:`to_hub` (``advtrain export --format hub``): a folder with ``model.safetensors``,
  ``config.json`` and a ``README.md`` model card, which huggingface_hub's standard loading reads
  offline (:class:`advtrain.hub.hf.AdvtrainModel`);
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
from typing import Optional

import torch

from advtrain.io.atomic import commit_files, safetensors_bytes, tensor_bytes
from advtrain.errors import CheckpointError, InputError, unknown
from advtrain.models.timm_models import build_options, probe_input
from advtrain.hub.zoo import (EXPORT_SUFFIXES, LOCAL_ONLY, ZOO_THREAT_MODELS, ZOO_DATASETS,  # noqa: F401
                          _is_ours, check_zoo_threat_model, meta_path,
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
    check_zoo_threat_model(threat_model)
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


#: the files of a hub-format export (huggingface_hub's ``PyTorchModelHubMixin`` layout)
HUB_WEIGHTS, HUB_CONFIG, HUB_README = "model.safetensors", "config.json", "README.md"


def to_hub(model: torch.nn.Module, arch: str, dataset: str, name: str, out_dir, *,
           threat_model: str = "Linf", card: Optional[dict] = None, overwrite: bool = False) -> Path:
    """Write ``out_dir/`` with ``model.safetensors`` (weights under ``model.``), ``config.json``
    (what rebuilds the architecture: :class:`advtrain.hub.hf.AdvtrainModel`'s arguments) and a
    ``README.md`` model card carrying ``card`` (a result card's checked fields: numbers, eps,
    footnote), committed as one output (the weights last). Loads offline with
    ``AdvtrainModel.from_pretrained(out_dir)``."""
    import json

    out = Path(out_dir)
    weights = out / HUB_WEIGHTS
    if weights.exists() and not overwrite:
        raise InputError(f"{weights} already exists; choose another --out or pass --overwrite")
    state = {"model." + k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    config = {"arch": arch, "dataset": dataset, "options": build_options(model)}
    out.mkdir(parents=True, exist_ok=True)
    commit_files({out / HUB_CONFIG: json.dumps(config, indent=2) + "\n",
                  out / HUB_README: hub_readme(name, arch, dataset, threat_model, card),
                  weights: safetensors_bytes(state, {"format": "pt", "arch": arch,
                                                     "dataset": dataset})},
                 primary=weights, size_hint=tensor_bytes(state))
    return out


def hub_readme(name: str, arch: str, dataset: str, threat_model: str,
               card: Optional[dict] = None) -> str:
    """The model card: Hub metadata, how to load, and the result card's numbers and footnote (text
    from a card is escaped: it cannot add HTML to the page)."""
    import html

    esc = (lambda v: html.escape(" ".join(str(v).split())).replace("|", "\\|"))
    lines = ["---", "library_name: advtrain", "tags:", "- adversarial-robustness",
             "- robustbench", f"- {dataset}", "---", "", f"# {esc(name)}", "",
             f"`{esc(arch)}` trained on {esc(dataset)} ({esc(threat_model)} threat model), "
             "exported by advtrain "
             "(`advtrain export --format hub`). Inputs are images in [0, 1] (NCHW float32).", "",
             "## Load", "", "```python", "from advtrain.hub.hf import AdvtrainModel", "",
             'model = AdvtrainModel.from_pretrained("path/to/this/folder")  # or a Hub repo id',
             "logits = model(x)  # x in [0, 1]", "```", ""]
    if card:
        lines += ["## Evaluation (RobustBench result card)", "", "| field | value |", "|---|---|"]
        for key, title in (("dataset", "dataset"), ("threat_model", "threat model"),
                           ("eps", "eps"), ("clean_acc", "clean accuracy (%)"),
                           ("autoattack_acc", "AutoAttack robust accuracy (%)"),
                           ("external", "best known robust accuracy (%), external"),
                           ("corruptions_acc", "corruptions accuracy (%)"),
                           ("reported", "reported (%)"), ("unreliable", "unreliable"),
                           ("evaluation", "evaluation")):
            if card.get(key) not in (None, ""):
                lines.append(f"| {title} | {esc(card[key])} |")
        if card.get("footnote"):
            lines += ["", f"Footnote: {esc(card['footnote'])}"]
        lines.append("")
    else:
        lines += ["No result card was given (`--card`): this export makes no robustness claim.", ""]
    return "\n".join(lines)
