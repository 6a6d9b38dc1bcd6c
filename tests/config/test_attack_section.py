"""The config's ``attack:`` section names a training attack from the registry: default pgd (a stored
config without ``attack.name`` is pgd), ``none``, one-line errors, the ramp's one default."""
from __future__ import annotations

import math

import pytest
import yaml

from advtrain import config as C
from advtrain.errors import InputError, UnknownNameError
from attacks import PGD, NoAttack


def test_default_is_pgd_and_every_attack_key_is_typed():
    cfg = C.from_dict({"objective": {"name": "trades"}})
    a = cfg.attack
    assert a.name == "pgd" and isinstance(a.options, PGD.Options)
    assert (a.options.norm, a.options.init, a.options.bn_mode) == ("Linf", "normal", "eval")
    assert a.norm == a.options.norm  # read through
    res = C.resolve(cfg)["attack"]
    assert set(res) == {"name", "eps", "norm", "schedule", "ramp", "steps", "step_size", "init", "bn_mode"}
    assert res["name"] == "pgd" and None not in res.values()
    again = C.from_dict(yaml.safe_load(C.dump(cfg)))
    assert again == cfg and C.resolve(again) == C.resolve(cfg)


def test_stored_config_without_attack_name_is_pgd_and_resumes(tmp_path):
    """A config.yaml of the release before the registry (no ``attack.name``) resolves to pgd, and the
    resume comparison accepts it (the key it lacks keeps its default)."""
    from advtrain.train.setup import _check_same

    cfg = C.from_dict({"objective": {"name": "pgd_at"}, "optim": {"epochs": 3}})
    stored = C.resolve(cfg)
    del stored["attack"]["name"]
    old = C.from_dict(stored)
    assert old.attack.name == "pgd" and old == cfg
    _check_same(C.resolve(old), stored, str(tmp_path))  # no error
    other = C.resolve(C.from_dict({"objective": {"name": "pgd_at"}, "optim": {"epochs": 3},
                                   "attack": {"name": "none"}}))
    with pytest.raises(InputError, match=r"attack.name: 'pgd' -> 'none'"):
        _check_same(other, stored, str(tmp_path))


def test_none_validates_with_eps_zero_and_takes_only_the_common_recipe():
    cfg = C.from_dict({"objective": {"name": "pgd_at"}, "attack": {"name": "none", "eps": 0}})
    a = cfg.attack
    assert a.name == "none" and isinstance(a.options, NoAttack.Options) and a.eps == 0.0
    assert (a.schedule, a.steps, a.norm) == ("executed", 10, "Linf")  # pgd_at's budget recipe
    res = C.resolve(cfg)["attack"]
    assert "init" not in res and "bn_mode" not in res  # PGD's options are not none's
    obj = C.build_objective("pgd_at", attack_name="none")
    assert isinstance(obj.attack, NoAttack)


def test_unknown_attack_name_is_one_line_with_the_choices():
    with pytest.raises(UnknownNameError, match=r"unknown training attack \(attack.name\) 'pdg'; "
                                               r"did you mean 'pgd' or 'apgd'\? choices: apgd, fgsm, fgsm_rs, n_fgsm, none, pgd, pgd_best") as info:
        C.from_dict({"attack": {"name": "pdg"}})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("attack,match,cls", [
    ({"name": "none", "init": "normal"},
     r"config key 'attack.init' is an option of attack 'pgd', not of attack 'none'; remove it or set "
     r"attack.name: pgd", InputError),
    ({"name": "none", "bn_mode": "train"}, r"'attack.bn_mode' is an option of attack 'pgd'", InputError),
    ({"initt": "normal"}, r"unknown config key 'attack.initt'; did you mean 'attack.init'.*choices: "
                          r"attack.bn_mode, ", UnknownNameError),
    ({"options": {"init": "normal"}}, r"unknown config key 'attack.options'", UnknownNameError),
    ({"name": 3}, r"'attack.name' must be a string", InputError),
    ({"init": "gauss"}, r"unknown attack init \(attack.init\) 'gauss'", UnknownNameError),
    ({"steps": -1}, r"'attack.steps' = -1 must be >= 0", InputError),
    ({"eps": -0.1}, r"eps -0.1 = -0.1 is not a finite radius >= 0", InputError),
    ({"name": "apgd", "label_smoothing": 1.5}, r"'attack.label_smoothing' = 1.5 must be < 1.0", InputError),
    ({"label_smoothing": 0.1}, r"'attack.label_smoothing' is an option of attack 'apgd'", InputError),
])
def test_attack_mistakes_are_one_line(attack, match, cls):
    with pytest.raises(cls, match=match) as info:
        C.from_dict({"objective": {"name": "trades"}, "attack": attack})
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="must be a mapping"):
        C.from_dict({"attack": [1]})


def test_the_ramp_has_one_default():
    """attack_budget's default ramp and the config's are the same rule (schedules.default_ramp)."""
    from advtrain.config.schedules import ATTACK_SCHEDULES, attack_budget

    for schedule in ATTACK_SCHEDULES:
        cfg = C.from_dict({"attack": {"schedule": schedule}, "optim": {"epochs": 4}})
        a = cfg.attack
        with_default = attack_budget(1, 4, a.eps, a.schedule, steps=a.steps, step_size=a.step_size)
        resolved = attack_budget(1, 4, a.eps, a.schedule, steps=a.steps, step_size=a.step_size,
                                 ramp=a.ramp)
        assert with_default == resolved
        no_radius_ramp = ("fixed", "ares_step_ramp")  # ares_step_ramp ramps the step, not the radius
        assert math.isclose(resolved.eps, a.eps / 4 if schedule not in no_radius_ramp else a.eps, rel_tol=1e-12)


def test_check_attack_runs_once_per_config(monkeypatch):
    import advtrain.config.attack as A

    calls = []
    original = A.check_attack
    monkeypatch.setattr(A, "check_attack", lambda a: (calls.append(a), original(a)))
    C.from_dict({"objective": {"name": "trades"}})
    assert len(calls) == 1


def test_every_objectives_attack_recipe_names_a_training_attack_and_only_its_keys():
    """A recipe key the attack it names does not take would be dropped without a word."""
    from attacks import TRAINING_ATTACKS
    from attacks.options import option_names

    from advtrain.config.attack import ATTACK_COMMON
    from advtrain.objectives import OBJECTIVES

    for name, cls in OBJECTIVES.items():
        recipe = cls.Options.ATTACK
        attack = recipe.get("name", "pgd")
        assert attack in TRAINING_ATTACKS, name
        extra = set(recipe) - set(ATTACK_COMMON) - set(option_names(TRAINING_ATTACKS[attack].Options))
        assert not extra, (name, extra)
