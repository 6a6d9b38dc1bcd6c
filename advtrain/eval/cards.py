"""RobustBench result cards and the advtrain sidecar next to them.

The one card writer: every evaluation (Linf/L2 AutoAttack, ImageNet/ImageFolder, eps sweeps, common
corruptions) writes its card through ``write_card(result, CardInfo(name=..., dataset=...,
threat_model=..., architecture=...))``, which writes

- ``<out_dir>/<dataset>/<threat_model>/<name>.json``: the fields of RobustBench's own cards --
  Linf/L2 (an :class:`~advtrain.eval.settings.EvalResult`): ``robustbench.utils.ModelInfo`` plus
  ``unreliable``, which 67 of RobustBench's 99 CIFAR-10 Linf cards carry, eps as ``"8/255"``
  whenever it is k/255; ``corruptions`` (a :class:`~advtrain.eval.settings.CorruptionsResult`):
  ``clean_acc`` and ``corruptions_acc``; accuracies as percentage strings with two decimals
  (``0.8531 -> "85.31"``);
- ``<name>.advtrain.json`` beside it: per-attack accuracies (corruptions: per corruption and
  severity), timings, flags, sanity report, settings, data provenance, package versions,
  checkpoint SHA-256, command line and date.

A card says what it is: unless the evaluation is standard AutoAttack (corruptions: every block)
on the protocol's whole test set (its size: the dataset's row in :data:`advtrain.data.facts.FACTS`),
its ``footnote`` names the attacks and the number of images; ``reported`` (in RobustBench: the paper's
claim) comes from the user, else it is the measured number only for a full standard run, else the
key is absent; no field is ``null``. The two files are committed as one
(:func:`advtrain.io.atomic.commit_files`, the card as the primary file): the card is renamed into place last, so a lone sidecar marks an unfinished write that a rerun
replaces without ``--overwrite``.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from advtrain.data.facts import facts
from advtrain.errors import InputError, unknown
from attacks import NORMS
from advtrain.io.atomic import commit_files
from advtrain.eval.settings import CORRUPTIONS, CorruptionsResult
from advtrain.io.names import SIDECAR_SUFFIX, check_model_name
from advtrain.io.safeload import file_sha256
from advtrain.utils import format_eps, git_commit, package_versions

#: every card's threat model: the attack norms and the common corruptions (``CORRUPTIONS``, from
#: :mod:`advtrain.eval.settings`); the zoo's are the norms only (``hub.zoo.ZOO_THREAT_MODELS``)
CARD_THREAT_MODELS = tuple(NORMS) + (CORRUPTIONS,)


@dataclass(frozen=True)
class CardInfo:
    """What the card says beyond the measured numbers (RobustBench ModelInfo's descriptive fields).

    ``reported`` is the paper's robust accuracy as a percentage string (``"57.20"``) or None;
    ``test_images`` is the size of the protocol's test set the evaluated images were drawn from
    (default: the dataset's facts row; a dataset without one, e.g. an ImageFolder tree, must
    give it: its whole folder).
    """

    name: str
    dataset: str
    threat_model: str
    architecture: str
    title: Optional[str] = None
    venue: str = ""
    link: str = ""
    authors: str = ""
    footnote: Optional[str] = None
    additional_data: bool = False
    number_forward_passes: int = 1
    reported: Optional[str] = None
    test_images: Optional[int] = None

    def __post_init__(self):
        row = facts(self.dataset)  # unknown -> one line naming every dataset
        if self.threat_model not in CARD_THREAT_MODELS:
            raise unknown("threat model", self.threat_model, CARD_THREAT_MODELS)
        if self.threat_model == CORRUPTIONS and row.corruptions is None:
            raise InputError(f"{self.dataset} has no common-corruptions release; threat model "
                             f"corruptions is for {', '.join(_corruption_datasets())}")
        if self.test_images is None:
            object.__setattr__(self, "test_images", row.test_images)
        if not isinstance(self.test_images, int) or self.test_images < 1:
            raise InputError(f"card of {self.dataset}: give the size of the test set evaluated "
                             f"from (test_images), got {self.test_images!r}")
        check_model_name(self.name, "card name")
        if self.reported is not None:
            object.__setattr__(self, "reported", _percent_text(self.reported))


def training_note(training: Optional[dict]) -> Optional[str]:
    """The card's words for a model that was not adversarially trained (the checkpoint's config
    names the training attack ``none``: standard training), else None."""
    if not training or training.get("adversarially_trained", True):
        return None
    return ("Standard training, not adversarially trained (training attack: none); a robust "
            "accuracy near 0% is the expected result, not a failure of the evaluation")


def _corruption_datasets():
    from advtrain.data.facts import dataset_names

    return dataset_names(corruptions=True)


def display_arch(arch: Optional[str], zoo_name: Optional[str] = None) -> str:
    """The one display-name helper: RobustBench's spelling of an architecture, from an advtrain name
    (``wrn-34-10 -> WideResNet-34-10``) or, with ``arch`` None, from the architecture part of a
    RobustBench zoo id (``Cui2023Decoupled_WRN-34-10 -> WideResNet-34-10``)."""
    if arch is None:
        _, _, tail = (zoo_name or "").partition("_")
        if tail.startswith("WRN-"):
            return "WideResNet-" + "-".join(tail[4:].split("-")[:2]).split("_")[0]
        return tail  # "" when the id has no architecture part: the caller's fallback
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


def _percent_text(value) -> str:
    """``--reported 57.2`` -> ``"57.20"`` (a percentage in [0, 100])."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0 <= number <= 100:
        raise InputError(f"reported accuracy {value!r} must be a percentage in [0, 100], e.g. 57.20")
    return f"{number:.2f}"


def is_full_standard(result, info: CardInfo) -> bool:
    """Standard AutoAttack at its own budget, fp32, on the whole test set (corruptions: every
    image of every corruption x severity block)."""
    if isinstance(result, CorruptionsResult):
        return result.n_per_block >= info.test_images
    return result.settings.standard and result.n_ex >= info.test_images


def describe(result, info: CardInfo) -> str:
    """``AutoAttack custom (apgd-ce, apgd-t), n_iter 3, on 100 of 10000 test images``
    (corruptions: ``4 of 10000 images per corruption and severity (15 corruptions x 5
    severities)``, with ``partial evaluation:`` in front when it is one)."""
    if isinstance(result, CorruptionsResult):
        table = result.per_corruption_severity
        severities = len(next(iter(table.values()), {}))
        what = (f"{result.n_per_block} of {info.test_images} images per corruption and severity "
                f"({len(table)} corruptions x {severities} severities)")
        return what if is_full_standard(result, info) else "partial evaluation: " + what
    s = result.settings
    knobs = [f"{k} {getattr(s, k)}" for k in ("n_iter", "n_restarts", "n_queries", "n_targets")
             if getattr(s, k) is not None]
    if s.precision != "fp32":
        knobs.append(s.precision)
    what = f"AutoAttack {s.version} ({', '.join(result.attacks)})"
    return ", ".join([what, *knobs]) + f", on {result.n_ex} of {info.test_images} test images"


def card_fields(result, info: CardInfo) -> dict:
    """The card as a dict in RobustBench's key order; no ``null`` values (see the module doc)."""
    corruptions = isinstance(result, CorruptionsResult)
    robust = percent(result.corruptions_acc if corruptions else result.robust_acc)
    full = is_full_standard(result, info)
    card = {"link": info.link, "name": info.title or info.name, "authors": info.authors,
            "additional_data": bool(info.additional_data),
            "number_forward_passes": int(info.number_forward_passes), "dataset": info.dataset,
            "venue": info.venue, "architecture": info.architecture}
    if not corruptions:
        card["eps"] = format_eps(result.settings.eps)
    card["clean_acc"] = percent(result.clean_acc)
    reported = info.reported or (robust if full else None)
    if reported is not None:
        card["reported"] = reported
    card["corruptions_acc" if corruptions else "autoattack_acc"] = robust
    notes = [n.strip().rstrip(".") for n in (info.footnote, None if full else
                                              describe(result, info)) if n and n.strip()]
    if notes:
        card["footnote"] = ". ".join(notes) + "."
    if corruptions:  # RobustBench's corruptions cards carry no unreliable field
        return card
    from advtrain.eval.sanity import DATA_FLAGS

    card["unreliable"] = any(f.get("code") not in DATA_FLAGS and not f.get("expected")
                             for f in result.flags)
    return card


def sidecar_fields(result, info: CardInfo, *, command: Optional[Sequence[str]] = None,
                   checkpoint=None, extra: Optional[dict] = None) -> dict:
    """Everything needed to audit and reproduce the card's numbers."""
    side = {"name": info.name, "dataset": info.dataset, "threat_model": info.threat_model,
            "full_standard": is_full_standard(result, info), "test_images": info.test_images,
            "evaluation": describe(result, info)}
    side.update(result.record())
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


#: the files a card takes in its folder: ``<name>.json`` and its sidecar (with sweep.SWEEP_SUFFIXES
#: the family that ``io.paths.check_outputs`` keeps apart from other names' files)
CARD_SUFFIXES = (".json", SIDECAR_SUFFIX)


def card_files(out_dir, dataset: str, threat_model: str, name: str) -> tuple:
    """``(card, sidecar)``: ``<out_dir>/<dataset>/<threat_model>/<name>.json`` and its sidecar."""
    folder = Path(out_dir) / dataset / threat_model
    return folder / f"{name}.json", folder / f"{name}{SIDECAR_SUFFIX}"


def card_paths(out_dir, info: CardInfo) -> tuple:
    """``(card, sidecar)`` paths of ``info`` under ``out_dir``."""
    return card_files(out_dir, info.dataset, info.threat_model, info.name)


def write_card(result, info: CardInfo, *, out_dir="model_info",
               command: Optional[Sequence[str]] = None, checkpoint=None,
               extra: Optional[dict] = None, overwrite: bool = True,
               files: Optional[dict] = None) -> tuple:
    """The one card writer: the RobustBench card of ``result`` (an
    :class:`~advtrain.eval.settings.EvalResult` or a
    :class:`~advtrain.eval.settings.CorruptionsResult`) and its sidecar, written as one (with ``files``, ``{path: content}`` of
    further files beside them, e.g. the ``--eps-sweep`` curves); returns ``(card_path, sidecar_path)``.

    Refused (:class:`InputError`, nothing written) when the result carries a flag that makes its
    numbers meaningless (:data:`advtrain.eval.sanity.BLOCKING`, e.g. non-finite logits), or, with
    ``overwrite=False``, when the card already exists (a sidecar without its card is the remnant
    of an interrupted write and is replaced).
    """
    from advtrain.eval.sanity import BLOCKING

    if result.threat_model != info.threat_model:
        raise InputError(f"result is for {result.threat_model} but threat_model is "
                         f"{info.threat_model!r}")
    blocking = [f for f in result.flags if f.get("code") in BLOCKING]
    if blocking:
        raise InputError(f"card not written: [{blocking[0]['code']}] {blocking[0]['message']} "
                         f"(see {blocking[0]['doc']})")
    card_path, side_path = card_paths(out_dir, info)
    if not overwrite and card_path.exists():
        raise InputError(f"card {card_path} already exists; choose another name or pass "
                         "--overwrite")
    card_path.parent.mkdir(parents=True, exist_ok=True)
    side = sidecar_fields(result, info, command=command, checkpoint=checkpoint, extra=extra)
    commit_files({**(files or {}), side_path: json.dumps(side, indent=2, default=_jsonable) + "\n",
                  card_path: json.dumps(card_fields(result, info), indent=2) + "\n"},
                 primary=card_path)
    return card_path, side_path


def _jsonable(obj):
    """JSON fallback for tensors / numpy scalars / paths in a result dict."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
