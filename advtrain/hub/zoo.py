"""RobustBench's model zoo as advtrain sees it: entries, file locations, and our exports' sidecars.

- :func:`zoo_entry` / :func:`zoo_path`: RobustBench's table entry of a name and where its
  ``model_dir`` file lives (``<model_dir>/<dataset>/<threat_model>/<name>.pt``);
- :func:`read_sidecar`: the ``<name>.advtrain.json`` an ``advtrain export`` writes beside its file
  (the advtrain architecture that builds it), validated field by field: a wrong type, case or an
  unknown field is one line, never a traceback;
- :func:`register_model_dir` / :func:`register_robustbench`: teach RobustBench's table (in this
  process) to build our exports, so ``robustbench.utils.load_model`` loads them too.

Loading a file goes through :mod:`advtrain.hub.loader`, never through RobustBench's loader.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional


from advtrain.errors import InputError, unknown
from advtrain.io.names import SIDECAR_SUFFIX, check_model_name
from advtrain.data.facts import FactView
from attacks import NORMS

#: the attack norms (``attacks.NORMS``, their one owner) for which RobustBench has no leaderboard
#: and no zoo table (its ``ThreatModel`` enum: Linf, L2, corruptions; tests/hub/test_zoo_threat_models.py
#: holds this against the installed robustbench): advtrain evaluates them, its cards say so
NO_LEADERBOARD = ("L1",)
#: the threat models of the zoo tables advtrain exports to and loads from: the attack norms that
#: RobustBench has; cards know more (``advtrain.eval.cards.CARD_THREAT_MODELS``)
ZOO_THREAT_MODELS = tuple(n for n in NORMS if n not in NO_LEADERBOARD)


def check_zoo_threat_model(threat_model: str, what: str = "threat model", fix: str = "") -> str:
    """``threat_model`` if RobustBench has zoo tables for it, else one line naming the fix
    (``fix``: another way out, e.g. ``"or export with --format hub"``)."""
    if threat_model in NO_LEADERBOARD:
        raise InputError(f"RobustBench has no {threat_model} threat model (no leaderboard, no model "
                         f"zoo table): {what} {threat_model} names no RobustBench model file; "
                         f"choose {' or '.join(ZOO_THREAT_MODELS)}" + (f", {fix}" if fix else ""))
    if threat_model not in ZOO_THREAT_MODELS:
        raise unknown(what, threat_model, ZOO_THREAT_MODELS)
    return threat_model
#: the datasets whose RobustBench zoo tables advtrain exports to and loads from: the rows of
#: :data:`advtrain.data.facts.FACTS` with a RobustBench name (a live view: name -> RobustBench's)
ZOO_DATASETS = FactView(lambda row: row.robustbench, keep=lambda row: row.robustbench is not None)
#: ``gdrive_id`` of entries we add: RobustBench only needs it to be set; the file is local
LOCAL_ONLY = "advtrain-local-export"
SIDECAR_FIELDS = ("name", "arch", "dataset", "threat_model")
#: optional sidecar field: ``create_model`` options beyond the name (timm: class count and image
#: size, positive integers; revisiting-at's ConvStem and the [0, 1]-input variant, booleans), as
#: :func:`advtrain.models.timm_models.build_options` records them
OPTIONS = ("num_classes", "image_size")
FLAG_OPTIONS = ("conv_stem", "normalize")


def zoo_entry(name: str, dataset: str, threat_model: str) -> Optional[dict]:
    """RobustBench's zoo entry (``{"model": constructor, "gdrive_id": ...}``) or None."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        table = model_dicts[BenchmarkDataset(ZOO_DATASETS.get(dataset, dataset))][ThreatModel(threat_model)]
    except (ValueError, KeyError):
        return None
    return table.get(name)


def unknown_zoo(name, dataset, threat_model):
    """The one-line 'unknown RobustBench model' error, with close matches."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        names = list(model_dicts[BenchmarkDataset(ZOO_DATASETS.get(dataset, dataset))][ThreatModel(threat_model)])
    except (ValueError, KeyError):
        names = []
    return unknown(f"RobustBench {dataset}/{threat_model} model", name, names)


#: the files an export takes in its folder (``zoo_path``, ``meta_path``, the optional safetensors)
EXPORT_SUFFIXES = (".pt", SIDECAR_SUFFIX, ".safetensors")


def zoo_path(model_dir, name: str, dataset: str, threat_model: str) -> Path:
    """Where RobustBench looks for a local checkpoint (``name`` must be a safe file-name id)."""
    check_model_name(name, "--name")
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


def meta_path(model_dir, name: str, dataset: str, threat_model: str) -> Path:
    """``<name>.advtrain.json`` beside an export: the advtrain architecture that builds it."""
    check_model_name(name, "--name")
    return Path(model_dir) / dataset / threat_model / f"{name}{SIDECAR_SUFFIX}"


def sidecar_text(name: str, arch: str, dataset: str, threat_model: str,
                 options: Optional[Dict[str, int]] = None) -> str:
    """The sidecar ``advtrain export`` writes (what :func:`read_sidecar` accepts); ``options``
    (:func:`advtrain.models.timm_models.build_options`) only when there are any."""
    info = {"name": name, "arch": arch, "dataset": dataset, "threat_model": threat_model}
    return json.dumps({**info, **({"options": options} if options else {})}, indent=1) + "\n"


def read_sidecar(path) -> Dict[str, str]:
    """The validated fields of an export's ``.advtrain.json``; one-line :class:`InputError` if not."""
    fix = "delete it and export again"
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not an advtrain export description ({type(exc).__name__}); "
                         f"{fix}") from None
    if not isinstance(info, dict):
        raise InputError(f"{path}: an export description is a JSON object, found "
                         f"{type(info).__name__}; {fix}")
    extra = sorted(set(info) - set(SIDECAR_FIELDS) - {"options"})
    missing = [k for k in SIDECAR_FIELDS if k not in info]
    bad = [k for k in SIDECAR_FIELDS if k in info and not isinstance(info[k], str)]
    if extra or missing or bad:
        what = "; ".join(x for x in (f"unknown fields {extra}" if extra else "",
                                     f"missing {missing}" if missing else "",
                                     f"not strings: {bad}" if bad else "") if x)
        raise InputError(f"{path}: not an advtrain export description ({what}); {fix}")
    _check_options(path, info.get("options", {}), fix)
    _choice(path, "dataset", info["dataset"], ZOO_DATASETS)
    _choice(path, "threat_model", info["threat_model"], ZOO_THREAT_MODELS)
    check_model_name(info["name"], f"{path}: name")
    if Path(path).name != f"{info['name']}{SIDECAR_SUFFIX}":
        raise InputError(f"{path}: describes {info['name']!r}, not the file beside it; {fix}")
    return info


def _check_options(path, options: Any, fix: str) -> None:
    def fine(k, v):
        if k in FLAG_OPTIONS:
            return isinstance(v, bool)
        return k in OPTIONS and isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if not (isinstance(options, dict) and all(fine(k, v) for k, v in options.items())):
        raise InputError(f"{path}: options must map {' / '.join(OPTIONS)} to positive integers and "
                         f"{' / '.join(FLAG_OPTIONS)} to true/false, found {str(options)[:120]}; {fix}")


def _choice(path, key: str, value: str, choices) -> None:
    if value not in choices:
        raise InputError(f"{path}: {key} {value!r} is not one of {', '.join(choices)} (case "
                         "matters); delete it and export again")


def _is_ours(entry) -> bool:
    return isinstance(entry, dict) and entry.get("gdrive_id") == LOCAL_ONLY


def register_robustbench(name: str, arch: str, dataset: str, threat_model: str = "Linf",
                         options: Optional[Dict[str, int]] = None) -> None:
    """Add ``name`` (built by advtrain's ``arch``) to RobustBench's zoo table in this process, so
    ``robustbench.utils.load_model(name, model_dir=...)`` builds it and loads the local file.

    RobustBench's real zoo names are never replaced. The architecture is tried on the meta device
    (no memory; :func:`advtrain.models.convert.build_skeleton`), so a sidecar naming an unknown
    architecture costs nothing. ``options``: the
    sidecar's recorded ``create_model`` options (a timm model's class count and image size).
    """
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    from advtrain.models import create_model
    from advtrain.models.convert import build_skeleton

    options = dict(options or {})
    build_skeleton(lambda: create_model(arch, dataset=dataset, **options))  # unknown arch: one line now
    # RobustBench has no table for some pairs (e.g. cifar100/L2): create it, load_model reads it
    table = model_dicts[BenchmarkDataset(ZOO_DATASETS.get(dataset, dataset))].setdefault(ThreatModel(threat_model), {})
    if name in table and not _is_ours(table[name]):
        raise InputError(f"{name!r} is already a RobustBench {dataset}/{threat_model} zoo model; "
                         "choose another name for your export")
    table[name] = {"model": lambda: create_model(arch, dataset=dataset, **options).eval(),
                   "gdrive_id": LOCAL_ONLY}


def register_model_dir(model_dir="checkpoints") -> list:
    """Register every advtrain export found in a RobustBench ``model_dir``; returns their names."""
    names = []
    for meta in sorted(Path(model_dir).glob("*/*/*" + SIDECAR_SUFFIX)):
        info = read_sidecar(meta)
        if (meta.parent.parent.name, meta.parent.name) != (info["dataset"], info["threat_model"]):
            raise InputError(f"{meta}: describes a {info['dataset']}/{info['threat_model']} export but "
                             "lies elsewhere; delete it and export again")
        register_robustbench(info["name"], info["arch"], info["dataset"], info["threat_model"],
                             info.get("options"))
        names.append(info["name"])
    return names
