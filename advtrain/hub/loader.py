"""THE model loader: advtrain checkpoints, exports and RobustBench ``model_dir`` files, one path for all.

Eval, export, average, resume and the distillation teacher all load models here, so each of them
gets every load-time check, in this order, before any real memory is spent on the model:

1. the file is read as tensors only (:func:`advtrain.io.safeload.load_state_file`): a pickled payload
   is refused unrun, declared storage sizes must fit the file, NaN/Inf and complex tensors are refused;
2. the weights are picked (trainer checkpoint ``model``/``ema``, or a plain state_dict) and the
   architecture resolved: given, recorded in the checkpoint, or from the export's validated
   ``.advtrain.json`` sidecar (:func:`advtrain.hub.zoo.read_sidecar`);
3. the architecture is built on the **meta device** and the file's keys, shapes and dtypes are
   compared with it (:func:`advtrain.models.convert.check_fits`): a 300 KB file recording a huge
   architecture is refused without allocating it (a constructor that cannot run on the meta
   device, timm's ConvNeXt and ViT, is built on the CPU for this check instead);
4. only then is the model built for real and loaded strictly.

RobustBench ``model_dir`` files (:func:`load_zoo`) go the same way, with RobustBench's zoo entry (or
our registry, for our exports) as the architecture: ``robustbench.utils.load_model`` never reads a
user's file. :func:`freeze` is the one way a loaded model is made a fixed function (teacher).

Example::

    loaded = load_model_file("runs/x/last.pt", dataset="cifar10", weights="ema")
    loaded.model, loaded.arch, loaded.sha256
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

from torch import nn

from advtrain.hub import zoo as zoo
from advtrain.errors import CheckpointError, InputError, unknown
from advtrain.models.convert import build_skeleton, check_fits, is_skeleton, load_weights
from advtrain.models.timm_models import recorded_options
from advtrain.io.names import SIDECAR_SUFFIX
from advtrain.io.safeload import file_sha256, load_state_file

__all__ = ["LoadedModel", "WEIGHTS", "freeze", "load_model_file", "load_zoo", "recorded_options",
           "skeleton"]

WEIGHTS = ("model", "ema")


@dataclass
class LoadedModel:
    """A model in eval mode on its device, and where it came from."""

    model: nn.Module
    arch: str
    path: str
    weights: str = "model"
    recorded: Dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def sha256(self) -> str:
        """SHA-256 of the file the weights came from (its identity, e.g. a run's teacher)."""
        return file_sha256(self.path)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients for any parameter: a fixed function (the teacher)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_model_file(path, *, dataset: str, arch: Optional[str] = None,
                    weights: Optional[str] = "model", device="cpu", what: str = "") -> LoadedModel:
    """Load an advtrain training checkpoint, an export or a plain/reference state_dict.

    ``weights`` None picks the weights a ``best.pt`` was chosen on (``ema`` when the held-out
    scoring used them, else ``model``). ``what`` prefixes messages (``"teacher checkpoint "``).
    Every check runs before the model is built for real (module docstring).
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise CheckpointError(f"{what}{path}: checkpoint file not found; check the path")
    raw = load_state_file(path)
    if weights is None:  # the trainer records best["weights"] in best.pt
        best = raw.get("best") if isinstance(raw.get("best"), Mapping) else {}
        weights = best.get("weights") if best.get("weights") in WEIGHTS else "model"
    if weights not in WEIGHTS:
        raise unknown("weights", weights, WEIGHTS)
    state, recorded = select_weights(raw, weights, path)
    side = _sidecar(path)
    if side and not recorded:  # an advtrain export: its sidecar names the architecture and options
        recorded = {"arch": side["arch"], "options": side.get("options", {})}
    arch = arch or recorded.get("arch")
    if arch and not isinstance(arch, str):
        raise CheckpointError(f"{what}{path} records architecture {arch!r}, not a name; pass --arch")
    if not arch:
        from advtrain.models import list_models
        raise InputError(f"{what}{path} records no architecture; pass --arch (for a teacher: "
                         f"set teacher.arch; choices: {', '.join(list_models())})")
    if recorded.get("dataset") and recorded["dataset"] != dataset and not _folder_pair(recorded["dataset"],
                                                                                       dataset):
        raise InputError(f"{what}{path} was trained on {recorded['dataset']!r} but the dataset is "
                         f"{dataset!r}; pass --dataset {recorded['dataset']} or use a model trained "
                         f"on {dataset}")
    from advtrain.models import create_model

    options = recorded.get("options", {}) if arch == recorded.get("arch") else {}
    if "image_size" in options:  # bounded before anything is built at that size
        from advtrain.data.imagefolder import check_image_size

        check_image_size(options["image_size"], f"{what}{path}: recorded image_size")
    from advtrain.models.timm_models import as_classifier_state, is_timm

    if is_timm(arch):  # timm's / torchvision's weights of the bare network load too
        state = as_classifier_state(state)
    model = build_checked(lambda: create_model(arch, dataset=dataset, **options), state, path)
    return LoadedModel(model.to(device).eval(), arch, path, weights, recorded)


def load_zoo(name: str, *, dataset: str, threat_model: str = "Linf", model_dir="checkpoints",
             device="cpu", what: str = "") -> LoadedModel:
    """A RobustBench-form file ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` built by its zoo
    entry (or, for an advtrain export, by the architecture its sidecar names); never downloads."""
    if dataset not in zoo.ZOO_DATASETS:
        raise InputError(f"{what}RobustBench models exist for {', '.join(zoo.ZOO_DATASETS)}, not "
                         f"{dataset!r}; load a checkpoint file instead")
    zoo.check_zoo_threat_model(threat_model, f"{what}threat model")  # L1: RobustBench has no table
    if Path(model_dir).is_dir():
        zoo.register_model_dir(model_dir)  # advtrain exports (e.g. the quickstart's)
    elif os.path.lexists(model_dir):  # else "unknown model" would send the user to the wrong fix
        raise InputError(f"{what}model_dir {os.fspath(model_dir)} is not a directory; give the "
                         "folder holding <dataset>/<threat_model>/<name>.pt")
    entry = zoo.zoo_entry(name, dataset, threat_model)
    if entry is None:
        raise zoo.unknown_zoo(name, dataset, threat_model)
    if isinstance(entry.get("gdrive_id"), list):
        raise InputError(f"{what}RobustBench model {name!r} is an ensemble of checkpoints; choose a "
                         "single model (ensembles are not supported)")
    path = zoo.zoo_path(model_dir, name, dataset, threat_model)
    if not path.is_file():
        raise CheckpointError(f"{what or 'RobustBench '}checkpoint {path} not found; put {name}.pt "
                              "there (downloading is not attempted offline)")
    model = build_checked(entry["model"], load_state_file(path), str(path))
    model.arch_name = name
    own = _sidecar(str(path))  # an advtrain export: its sidecar names our architecture
    return LoadedModel(model.to(device).eval(), name, str(path),
                       recorded={"arch": own["arch"]} if own else {})


def build_checked(build: Callable[[], nn.Module], state: Mapping[str, Any], name: str) -> nn.Module:
    """``build()`` on the meta device, ``state`` checked against it, then built for real and loaded
    (a constructor that cannot run on the meta device is built once, on the CPU, and used)."""
    model = build_skeleton(build)
    check_fits(model, state, strict=True, name=name)
    return load_weights(build() if is_skeleton(model) else model, state, strict=True, name=name)


def skeleton(arch: Any, dataset: Any = None, num_classes: Any = None,
             options: Optional[Mapping[str, Any]] = None) -> Optional[nn.Module]:
    """A recorded architecture built on the meta device (names, shapes, dtypes, no memory); None
    when the record names no buildable architecture (whoever builds the model reports that).
    ``options``: recorded ``create_model`` options (:func:`recorded_options`)."""
    from advtrain.errors import AdvtrainError
    from advtrain.models import create_model

    if not isinstance(arch, str):
        return None
    def build():
        return create_model(arch, dataset=dataset, **{"num_classes": num_classes, **(options or {})})

    try:
        return build_skeleton(build)
    except (AdvtrainError, TypeError, ValueError, RuntimeError, NotImplementedError):
        return None


def select_weights(raw: Mapping, weights: str, path) -> tuple:
    """``(state_dict, recorded)`` out of a trainer checkpoint; other formats pass through."""
    if isinstance(raw.get("model"), Mapping):
        state = raw.get(weights)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{os.fspath(path)} has no {weights!r} weights; use "
                                  "--weights model")
        recorded = {k: raw[k] for k in ("arch", "dataset", "num_classes") if k in raw}
        recorded["options"] = recorded_options(raw)
        data = raw.get("config", {}).get("data", {}) if isinstance(raw.get("config"), Mapping) else {}
        if isinstance(data, Mapping) and (data.get("root") or data.get("test_npz")):
            recorded["test_data"] = {"root": data.get("root"), "npz": data.get("test_npz")}
        if isinstance(data, Mapping) and (data.get("root") or data.get("train_npz")):
            recorded["train_data"] = {"root": data.get("root"), "npz": data.get("train_npz")}
        images = raw.get("train_images")  # an ImageFolder run: its class names in label order
        if isinstance(images, Mapping) and isinstance(images.get("classes"), list):
            recorded["classes"] = [str(c) for c in images["classes"]]
        training = training_record(raw.get("config"))
        if training is not None:
            recorded["training"] = training
        teacher = raw.get("teacher")  # {"file", "sha256"} of a distillation run's teacher
        if isinstance(teacher, Mapping):
            recorded["teacher"] = {k: str(teacher[k]) for k in ("file", "sha256") if k in teacher}
        return state, recorded
    if weights != "model":
        raise CheckpointError(f"{os.fspath(path)} is a plain state_dict without EMA weights; "
                              "use --weights model")
    return raw, {}


def training_record(config) -> Optional[Dict[str, Any]]:
    """How a trainer checkpoint's model was trained, from its stored config: the objective, the
    training attack (``attack.name``; checkpoints from before the attack registry trained PGD) and
    its radius, and whether that is adversarial training at all (``attack: {name: none}`` is the
    standard, clean training of RobustBench's "Standard" entries). None without a config."""
    if not isinstance(config, Mapping):
        return None
    attack = config.get("attack") if isinstance(config.get("attack"), Mapping) else {}
    objective = config.get("objective") if isinstance(config.get("objective"), Mapping) else {}
    name = str(attack.get("name", "pgd"))
    return {"objective": str(objective.get("name", "")), "attack": name,
            "eps": attack.get("eps"), "norm": attack.get("norm"),
            "adversarially_trained": name != "none"}


def _sidecar(path: str) -> Optional[Dict[str, Any]]:
    """The validated ``NAME.advtrain.json`` beside an export (architecture, options), if there is one."""
    meta = Path(path).with_suffix(SIDECAR_SUFFIX)
    return zoo.read_sidecar(meta) if meta.is_file() else None


def _folder_pair(a: str, b: str) -> bool:
    """A model trained on an ImageFolder tree may be evaluated/exported as RobustBench's imagenet."""
    from advtrain.data.imagefolder import is_folder_dataset

    return is_folder_dataset(a) and is_folder_dataset(b)
