"""RobustBench result cards and the advtrain sidecar next to them.

The one card writer: every evaluation (Linf/L2/L1 AutoAttack, ImageNet/ImageFolder, eps sweeps, common
corruptions) writes its card through ``write_card(result, CardInfo(name=..., dataset=...,
threat_model=..., architecture=...))``, which writes

- ``<out_dir>/<dataset>/<threat_model>/<name>.json``: the fields of RobustBench's own cards --
  Linf/L2/L1 (an :class:`~advtrain.eval.settings.EvalResult`): ``robustbench.utils.ModelInfo`` plus
  ``unreliable``, which 67 of RobustBench's 99 CIFAR-10 Linf cards carry, eps as ``"8/255"``
  whenever it is k/255, and RobustBench's ``external`` when an external evaluation is recorded;
  ``corruptions`` (a :class:`~advtrain.eval.settings.CorruptionsResult`): ``clean_acc`` and
  ``corruptions_acc``; accuracies as percentage strings with two decimals (``0.8531 -> "85.31"``);
- ``<name>.advtrain.json`` beside it: per-attack accuracies (corruptions: per corruption and
  severity), timings, flags, sanity report, settings, data provenance, package versions,
  checkpoint SHA-256, command line and date. It holds no absolute path of the machine
  (:func:`advtrain.io.paths.portable`: paths relative to the card's folder, or file names; the
  SHA-256s identify the files), so a card can be sent to anyone.

A card says what it is: unless the evaluation is standard AutoAttack (corruptions: every block)
on the protocol's whole test set (its size: the dataset's row in :data:`advtrain.data.facts.FACTS`),
its ``footnote`` names the attacks and the number of images (and, for L1, that RobustBench has no
L1 leaderboard: :func:`leaderboard_note`); ``reported`` (in RobustBench: the paper's
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
class ExternalEval:
    """An external or adaptive evaluation of the same model (RobustBench's ``external``): the attack
    that ran (e.g. ``"APGD + BPDA"``), its robust accuracy as a percentage (``"73.10"``) and where
    it is published (a URL or a citation). Checked on construction: one line each, accuracy in
    [0, 100]."""

    attack: str
    accuracy: str
    source: str

    def __post_init__(self):
        for key in ("attack", "source"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip() or "\n" in value or len(value) > 300:
                raise InputError(f"external {key} {str(value)[:40]!r} must be one non-empty line "
                                 f"(at most 300 characters), e.g. --external-{key} "
                                 + ("'APGD + BPDA'" if key == "attack" else "https://arxiv.org/abs/..."))
            object.__setattr__(self, key, value.strip())
        object.__setattr__(self, "accuracy", _percent_text(self.accuracy, "external accuracy"))

    def record(self) -> dict:
        return {"attack": self.attack, "accuracy": self.accuracy, "source": self.source}


@dataclass(frozen=True)
class CardInfo:
    """What the card says beyond the measured numbers (RobustBench ModelInfo's descriptive fields).

    ``reported`` is the paper's robust accuracy as a percentage string (``"57.20"``) or None;
    ``test_images`` is the size of the protocol's whole test set: for a dataset whose facts row
    has one (CIFAR: 10,000; ImageNet: RobustBench's 5,000-image list) it is always that number,
    whatever the size of the file given (a standard run is "full" only on the whole protocol); a
    dataset without one (an ImageFolder tree) must give it: its whole folder. ``external``: an
    external/adaptive evaluation (attack cards only).
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
    external: Optional[ExternalEval] = None

    def __post_init__(self):
        row = facts(self.dataset)  # unknown -> one line naming every dataset
        if self.threat_model not in CARD_THREAT_MODELS:
            raise unknown("threat model", self.threat_model, CARD_THREAT_MODELS)
        if self.threat_model == CORRUPTIONS and row.corruptions is None:
            raise InputError(f"{self.dataset} has no common-corruptions release; threat model "
                             f"corruptions is for {', '.join(_corruption_datasets())}")
        if self.threat_model == CORRUPTIONS and self.external is not None:
            raise InputError("an external evaluation is an attack's; a corruptions card has none")
        if row.test_images is not None:  # "full" is decided against the protocol, not the file
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


def _percent_text(value, what: str = "reported accuracy") -> str:
    """``--reported 57.2`` -> ``"57.20"`` (a percentage in [0, 100])."""
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not 0 <= number <= 100:
        raise InputError(f"{what} {value!r} must be a percentage in [0, 100], e.g. 57.20")
    return f"{number:.2f}"


def is_full_standard(result, info: CardInfo) -> bool:
    """Standard AutoAttack at its own budget, fp32, on the protocol's whole test set (corruptions:
    every image of every corruption x severity block)."""
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
    external = info.external
    if external is not None:  # RobustBench: the best known robust accuracy, AutoAttack or external
        card["external"] = min(robust, external.accuracy, key=float)
    notes = [n.strip().rstrip(".") for n in (info.footnote, None if full else
                                              describe(result, info), _external_note(external, robust),
                                              leaderboard_note(info.threat_model))
             if n and n.strip()]
    if notes:
        card["footnote"] = ". ".join(notes) + "."
    if corruptions:  # RobustBench's corruptions cards carry no unreliable field
        return card
    from advtrain.eval.sanity import DATA_FLAGS

    card["unreliable"] = any(f.get("code") not in DATA_FLAGS and not f.get("expected")
                             for f in result.flags)
    return card


def leaderboard_note(threat_model: str) -> Optional[str]:
    """The footnote sentence of a card whose threat model RobustBench does not rank (L1:
    :data:`advtrain.hub.zoo.NO_LEADERBOARD`); None for the others."""
    from advtrain.hub.zoo import NO_LEADERBOARD

    if threat_model not in NO_LEADERBOARD:
        return None
    return (f"RobustBench has no {threat_model} leaderboard: this card has RobustBench's format, "
            "but no RobustBench table ranks it")


def _external_note(external: Optional[ExternalEval], robust: str) -> Optional[str]:
    """The footnote sentence of an external evaluation, worded as RobustBench's cards word it."""
    if external is None:
        return None
    if float(external.accuracy) < float(robust):
        return (f"{external.accuracy}% robust accuracy is due to {external.attack} "
                f"({external.source})")
    return (f"External evaluation {external.attack} ({external.source}) gives "
            f"{external.accuracy}%, not below AutoAttack's {robust}%")


def sidecar_fields(result, info: CardInfo, *, command: Optional[Sequence[str]] = None,
                   checkpoint=None, extra: Optional[dict] = None) -> dict:
    """Everything needed to audit and reproduce the card's numbers."""
    side = {"name": info.name, "dataset": info.dataset, "threat_model": info.threat_model,
            "full_standard": is_full_standard(result, info), "test_images": info.test_images,
            "evaluation": describe(result, info),
            "external": info.external.record() if info.external is not None else None}
    side.update(result.record())
    from advtrain.eval.sanity import suggest_adaptive

    side["adaptive_suggestion"] = suggest_adaptive(result.flags)
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
    from advtrain.io.paths import portable

    # a card is sent to others: no absolute path of this machine (relative or file name + hash)
    side = portable(sidecar_fields(result, info, command=command, checkpoint=checkpoint,
                                   extra=extra), card_path.parent)
    commit_files({**(files or {}), side_path: json.dumps(side, indent=2, default=_jsonable) + "\n",
                  card_path: json.dumps(card_fields(result, info), indent=2) + "\n"},
                 primary=card_path)
    return card_path, side_path


def _jsonable(obj):
    """JSON fallback for tensors / numpy scalars / paths in a result dict."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


#: the largest card or sidecar :func:`add_external` reads (RobustBench's cards are under 2 KB)
MAX_CARD_BYTES = 1 << 20


def _read_card_json(path: Path) -> dict:
    """A card or sidecar handed to ``advtrain external``: untrusted, through the one JSON reader."""
    from advtrain.io.safeload import read_json_object

    return read_json_object(path, MAX_CARD_BYTES, "card",
                            fix="give the <name>.json that advtrain eval wrote")


def add_external(card_path, external: ExternalEval, *, command: Optional[Sequence[str]] = None
                 ) -> tuple:
    """Record ``external`` on an existing attack (Linf/L2/L1) card without re-running AutoAttack (which may
    have taken hours): the card gets RobustBench's ``external`` (the lower of its
    ``autoattack_acc`` and the external accuracy, right after ``autoattack_acc``) and the footnote
    sentence :func:`card_fields` writes; the sidecar beside it, when there is one (a published
    card has none), records the evaluation and the command that added it. Both are committed as
    one; a card that already records an external evaluation is refused (write it again with
    ``advtrain eval --external-*``). Returns ``(card_path, sidecar_path or None)``."""
    card_path = Path(card_path)
    if not card_path.is_file():
        raise InputError(f"{card_path}: no such card; give the <name>.json that advtrain eval wrote")
    card = _read_card_json(card_path)
    robust = card.get("autoattack_acc")
    if not isinstance(robust, str):
        raise InputError(f"{card_path} has no autoattack_acc: an external evaluation is recorded "
                         "on a Linf/L2/L1 attack card (not a corruptions card)")
    robust = _percent_text(robust, f"{card_path}: autoattack_acc")
    if "external" in card:
        raise InputError(f"{card_path} already records an external evaluation ({card['external']}"
                         "%); evaluate again with advtrain eval --external-attack ... to replace it")
    out = {}
    for key, value in card.items():
        out[key] = value
        if key == "autoattack_acc":
            out["external"] = min(robust, external.accuracy, key=float)
    note = _external_note(external, robust)
    old = str(card.get("footnote") or "").strip().rstrip(".")
    footnote = ". ".join(n for n in (old, note) if n) + "."
    if "footnote" in out:
        out["footnote"] = footnote
    else:  # RobustBench's key order: footnote after the accuracies, before unreliable
        tail = {k: out.pop(k) for k in list(out) if k == "unreliable"}
        out.update(footnote=footnote, **tail)
    side_path = card_path.with_name(card_path.stem + SIDECAR_SUFFIX)
    files = {card_path: json.dumps(out, indent=2) + "\n"}
    if side_path.is_file():
        from advtrain.io.paths import portable

        side = _read_card_json(side_path)
        side["external"] = external.record()
        cmd = shlex.join(command) if command is not None else shlex.join(sys.argv)
        side["external_added"] = portable({"command": cmd, "date": _dt.datetime.now(
            _dt.timezone.utc).isoformat(timespec="seconds")}, card_path.parent)
        files[side_path] = json.dumps(side, indent=2, default=_jsonable) + "\n"
    commit_files(files, primary=card_path)
    return card_path, side_path if side_path in files else None
