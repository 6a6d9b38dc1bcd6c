"""What an evaluation is: its settings (checked once, where they enter) and its typed result.

:class:`EvalSettings` is built at the edge -- ``advtrain eval``'s argument parsing or the keyword
arguments of ``advtrain.evaluate`` -- and is valid by construction: its ``__post_init__`` is the one
check of every setting (AutoAttack's own through :func:`attacks.autoattack.check_settings`). It
travels whole to :mod:`advtrain.eval.evaluator`, the AutoAttack adapter and the sharded runner, which
trust it. :meth:`EvalSettings.fingerprint` lists every setting that changes an attack's outcome: an
AutoAttack state file is bound to it (plus the weights' and the data's SHA-256, :meth:`bind`), so a
state written under a weaker budget is refused, naming the setting, instead of being reused.

:class:`EvalResult` is what an attack evaluation returns and :class:`CorruptionsResult` what the
common-corruptions evaluation returns; :func:`advtrain.eval.cards.write_card` takes either (their
``threat_model`` says which card).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from advtrain.errors import CheckpointError, InputError, UnknownNameError, unknown
from advtrain.utils import parse_eps
from advtrain.utils import format_eps

PRECISIONS = ("fp32", "bf16")
#: the settings that change what an attack does (the state-file fingerprint)
OUTCOME = ("norm", "eps", "version", "attacks", "seed", "batch_size", "precision", "n_iter",
           "n_restarts", "n_queries", "n_targets")


@contextlib.contextmanager
def user_errors():
    """Map :class:`attacks.AttackError` to advtrain's one-line user errors."""
    from attacks import AttackError
    from attacks.autoattack import AttackStateError, UnknownChoiceError

    try:
        yield
    except AttackStateError as e:
        raise CheckpointError(str(e)) from None
    except UnknownChoiceError as e:
        raise UnknownNameError(str(e)) from None
    except AttackError as e:
        raise InputError(str(e)) from None


def load_state_file(path) -> dict:
    """An AutoAttack ``--state-path`` file through the one safe loader; an unreadable one is named
    as a state file, with its fix (delete it: the evaluation recreates it), not a checkpoint's."""
    from advtrain.io import safeload as safeload

    try:
        return safeload.load_state_file(path)
    except CheckpointError as e:
        raise CheckpointError(f"AutoAttack state file {str(e).split('; ')[0]}; delete it (the "
                              "evaluation then starts afresh) or pass another --state-path") from None


@dataclass(frozen=True)
class EvalSettings:
    """Every setting of one evaluation, validated on construction (see the module docstring).

    ``eps`` may be given as ``"8/255"``; ``attacks`` (version ``custom`` only) becomes a tuple.
    ``n_iter``/``n_restarts``/``n_queries``/``n_targets`` override AutoAttack's budget (None: the
    version's own); any override makes the evaluation non-standard and the card says so.
    """

    norm: str = "Linf"
    eps: Any = 8 / 255
    version: str = "standard"
    attacks: Optional[tuple] = None
    seed: Optional[int] = 0
    batch_size: int = 500
    precision: str = "fp32"
    n_iter: Optional[int] = None
    n_restarts: Optional[int] = None
    n_queries: Optional[int] = None
    n_targets: Optional[int] = None
    pgd_steps: Optional[int] = None
    sanity: bool = True
    sanity_n: int = 100
    sanity_steps: int = 10
    guard_n: int = 100
    guard_seed: int = 0
    progress: bool = field(default=True, compare=False)

    def __post_init__(self):
        from attacks import NORMS
        from attacks.autoattack import check_settings

        if self.norm not in NORMS:
            raise unknown("norm", self.norm, NORMS)
        eps = parse_eps(self.eps, self.norm)
        with user_errors():
            attacks = check_settings(**self.adapter_kwargs(eps=eps, attacks=self.attacks))
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "attacks", None if attacks is None else tuple(attacks))
        if self.precision not in PRECISIONS:
            raise unknown("precision", self.precision, PRECISIONS)
        for name in ("pgd_steps", "sanity_n", "sanity_steps", "guard_n"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise InputError(f"{name} {value!r} must be a positive integer")

    def adapter_kwargs(self, **over) -> dict:
        """Keyword arguments of :class:`attacks.AutoAttackAdapter` for these settings."""
        kw = {k: getattr(self, k) for k in ("norm", "eps", "version", "seed", "batch_size",
                                            "n_iter", "n_restarts", "n_queries", "n_targets")}
        kw["attacks"] = None if self.attacks is None else list(self.attacks)
        return {**kw, **over}

    def fingerprint(self) -> dict:
        """Every setting that changes an attack's outcome (JSON-able)."""
        out = {k: getattr(self, k) for k in OUTCOME}
        out["attacks"] = None if self.attacks is None else ",".join(self.attacks)
        return out

    def bind(self, model, x, y) -> dict:
        """:meth:`fingerprint` plus the SHA-256 of the weights and of the data: a state file's key."""
        from advtrain.io.safeload import state_digest

        return {**self.fingerprint(), "model": state_digest(model.state_dict()),
                "data": state_digest({"x": x, "y": y}), "n_ex": int(len(x))}

    @property
    def standard(self) -> bool:
        """Standard AutoAttack at its own budget in fp32 (what RobustBench runs)."""
        budget = (self.n_iter, self.n_restarts, self.n_queries, self.n_targets)
        return self.version == "standard" and budget == (None,) * 4 and self.precision == "fp32"

    def replace(self, **changes) -> "EvalSettings":
        return dataclasses.replace(self, **changes)


def eps_note(eps: float) -> Optional[str]:
    """One line when ``eps`` is close to, but not, k/255 (``0.031`` is not ``8/255``); none from 1
    up (an L2/L1 radius such as 2 or 12 is not a k/255)."""
    k = round(eps * 255)
    if k < 1 or eps >= 1 or format_eps(eps).endswith("/255") or abs(eps * 255 - k) > 0.2:
        return None
    return (f"note: eps {eps:g} is not {k}/255 ({k / 255:.5f}); RobustBench's leaderboards use "
            f"{k}/255: pass --eps {k}/255 to compare with them")


@dataclass
class EvalResult:
    """The outcome of :func:`advtrain.evaluate`: fractions in [0, 1], settings attached.

    Read fields as attributes; ``result["clean_acc"]`` and ``"pgd_acc" in result`` also work
    (settings fields too: ``result["eps"]``), for code written against the former dict result.
    """

    settings: EvalSettings
    clean_acc: float
    robust_acc: float
    per_attack: dict          #: accuracy after each attack, cumulative, incl. 'clean'
    attacks: list             #: the attacks that ran, in order
    n_ex: int
    device: str
    seconds: dict = field(default_factory=dict)
    flags: list = field(default_factory=list)
    sanity: dict = field(default_factory=dict)
    pgd_acc: Optional[float] = None
    x_adv: Any = None
    y_adv: Any = None

    def __getitem__(self, key: str):
        if key in _RESULT_FIELDS:
            return getattr(self, key)
        if key == "pgd_steps" and self.pgd_acc is not None:
            return self.settings.pgd_steps
        if key in _SETTINGS_FIELDS:
            return getattr(self.settings, key)
        raise KeyError(key)

    def __contains__(self, key: str) -> bool:
        try:
            return self[key] is not None
        except KeyError:
            return False

    @property
    def threat_model(self) -> str:
        """The card's threat model: the attack norm."""
        return self.settings.norm

    def record(self) -> dict:
        """The JSON-able summary the sidecar keeps (no tensors)."""
        s = self.settings
        out = {k: getattr(self, k) for k in ("clean_acc", "robust_acc", "per_attack", "seconds",
                                              "flags", "sanity", "n_ex", "attacks", "device")}
        out.update(norm=s.norm, eps=s.eps, eps_str=format_eps(s.eps), version=s.version,
                   seed=s.seed, precision=s.precision, standard=s.standard,
                   budget={k: getattr(s, k) for k in OUTCOME[-4:]})
        if self.pgd_acc is not None:
            out.update(pgd_acc=self.pgd_acc, pgd_steps=s.pgd_steps)
        return out


#: the threat model of common-corruption results and cards (RobustBench's name)
CORRUPTIONS = "corruptions"


@dataclass
class CorruptionsResult:
    """The outcome of :func:`advtrain.eval.corruptions.evaluate_corruptions`: fractions in [0, 1].

    ``corruptions_acc`` is the mean over every corruption x severity block (RobustBench's
    ``corruptions_evaluation``); ``n_per_block`` images were evaluated of each block of
    ``n_block``; the clean accuracy is on ``n_clean`` clean test images.
    """

    clean_acc: float
    corruptions_acc: float
    per_corruption_severity: dict
    per_corruption: dict
    per_severity: dict
    n_per_block: int
    n_block: int
    n_clean: int
    folder: str
    flags: list = field(default_factory=list)

    threat_model = CORRUPTIONS  # not a field: a class constant

    @property
    def n_ex(self) -> int:
        """Images evaluated per corruption and severity."""
        return self.n_per_block

    def record(self) -> dict:
        """The JSON-able summary the sidecar keeps: every field (the per-block tables too)."""
        return dataclasses.asdict(self)


_RESULT_FIELDS = {f.name for f in dataclasses.fields(EvalResult)} - {"settings"}
_SETTINGS_FIELDS = {f.name for f in dataclasses.fields(EvalSettings)}
