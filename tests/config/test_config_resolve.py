"""The config is resolved once: objective recipes (options, attack, optimiser) filled in by the one
validator, ``defaults()`` computed once per ``advtrain train``, and the attack that actually runs in
epoch 1 of a distillation config that names only its objective and teacher."""
from __future__ import annotations

import os
import sys

import pytest
import torch
import yaml

from advtrain import config as C
from advtrain.errors import InputError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: shared helpers
from trainer_helpers import one_thread, tiny_config  # noqa: E402

E8, S2 = 8 / 255, 2 / 255


def test_defaults_run_once_per_train_command(tmp_path, monkeypatch):
    from advtrain.cli import main
    from advtrain.objectives.trades import TRADESOptions

    calls = []
    original = TRADESOptions.defaults.__func__

    def counting(cls, dataset=None):
        calls.append(dataset)
        return original(cls, dataset)

    monkeypatch.setattr(TRADESOptions, "defaults", classmethod(counting))
    raw = tiny_config(str(tmp_path), optim={"epochs": 1})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    with one_thread():
        assert main(["train", str(path)]) == 0
    assert calls == ["cifar10"]
    assert os.path.isfile(os.path.join(raw["run"]["out_dir"], "t", "last.pt"))


def _teacher_file(folder):
    from advtrain.models import create_model

    torch.manual_seed(0)
    path = os.path.join(folder, "teacher.pt")
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), path)
    return path


@pytest.mark.parametrize("name", ["rslad", "ard", "gkl_kd"])
def test_kd_config_with_only_objective_and_teacher_resolves_to_pgd10(name):
    cfg = C.from_dict({"objective": {"name": name}, "teacher": {"robustbench": "X"}})
    a = cfg.attack
    assert (a.schedule, a.ramp, a.steps, a.norm, a.bn_mode) == ("fixed", False, 10, "Linf", "eval")
    assert abs(a.eps - 8 / 255) < 1e-15 and abs(a.step_size - 2 / 255) < 1e-15
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.schedule) == (0.1, 2e-4, "piecewise")
    # a written entry wins over the recipe, the rest of the recipe stays
    mixed = C.from_dict({"objective": {"name": name}, "teacher": {"robustbench": "X"},
                         "attack": {"steps": 3}, "optim": {"lr": 0.05}})
    assert (mixed.attack.steps, mixed.attack.schedule, mixed.optim.lr, mixed.optim.weight_decay) == (
        3, "fixed", 0.05, 2e-4)


def test_ramp_follows_the_schedule_the_config_ends_up_with():
    """No recipe fixes the radius ramp: a written schedule brings its own (fixed: off, else on)."""
    fixed = C.from_dict({"objective": {"name": "gkl_at"}, "attack": {"schedule": "fixed"}})
    executed = C.from_dict({"objective": {"name": "rslad"}, "teacher": {"robustbench": "X"},
                            "attack": {"schedule": "executed"}})
    assert (fixed.attack.ramp, executed.attack.ramp) == (False, True)
    assert C.from_dict({"objective": {"name": "gkl_at"}}).attack.ramp is True
    written = C.from_dict({"objective": {"name": "gkl_at"}, "attack": {"schedule": "fixed", "ramp": True}})
    assert written.attack.ramp is True


def test_rslad_trains_pgd10_at_8_255_from_epoch_1(tmp_path, monkeypatch):
    """Only ``objective: {name: rslad}`` and a teacher (and a short run): the attack executed in the
    first training step of epoch 1 is PGD-10, step 2/255, in the 8/255 ball (DKL's executed ramp
    would run 5 steps of eps_t/2 inside eps_t = 8/255 * 1/2 here)."""
    from attacks import PGD
    from advtrain import fit

    seen = []
    original = PGD.__call__

    def spy(self, model, x, y):
        x_adv = original(self, model, x, y)
        seen.append((self.eps, self.alpha, self.steps, float((x_adv - x).abs().max())))
        return x_adv

    monkeypatch.setattr(PGD, "__call__", spy)
    raw = tiny_config(str(tmp_path), objective={"name": "rslad"}, optim={"epochs": 2},
                      eval={"test_pgd_steps": 0},
                      teacher={"checkpoint": _teacher_file(str(tmp_path)), "arch": "wrn-10-1"})
    del raw["attack"]
    assert "attack" not in raw and set(raw["objective"]) == {"name"}
    with one_thread():
        fit(raw, stop_after=1)
    assert seen, "no training attack ran"
    eps, step, steps, reach = seen[0]
    assert steps == 10 and abs(eps - E8) < 1e-12 and abs(step - S2) < 1e-12
    # 10 sign steps of 2/255 from x + 0.001 N(0, I) reach the 8/255 boundary; the ramp's ball is 4/255
    assert 6 / 255 < reach <= E8 + 1e-6
    assert all(s[:3] == seen[0][:3] for s in seen)  # the same budget in every step of epoch 1
    stored = yaml.safe_load(open(os.path.join(raw["run"]["out_dir"], "t", "config.yaml")))
    assert stored["attack"]["steps"] == 10 and stored["attack"]["schedule"] == "fixed"


def test_resolved_config_is_frozen_and_complete():
    cfg = C.from_dict({"objective": {"name": "ikl_at"}, "data": {"dataset": "cifar100"}})
    with pytest.raises(AttributeError):
        cfg.optim = None
    with pytest.raises(AttributeError):
        cfg.attack.eps = 0.1
    assert cfg.objective.attack_beta == 1.0 and cfg.objective.options.alpha == 4.0  # SPEC §2.3
    assert C.from_dict({"objective": {"name": "ikl_at"}}).objective.attack_beta == 0.0
    assert None not in C.resolve(cfg)["attack"].values()
    assert cfg.average.end == cfg.optim.epochs


def test_old_style_stored_config_still_loads(tmp_path):
    """A ``config.yaml`` of the current release (resolved, entries in the old order, attack entries
    null where the objective decided) loads to the same run."""
    old = {"objective": {"name": "trades", "beta": 6.0, "attack_loss": "kl", "label_smoothing": 0.0},
           "attack": {"eps": E8, "norm": None, "schedule": "executed", "ramp": None, "steps": None,
                      "step_size": None, "init": None, "bn_mode": None},
           "optim": {"epochs": 3}}
    cfg = C.from_dict(old)
    assert (cfg.attack.norm, cfg.attack.init, cfg.attack.ramp, cfg.attack.steps) == (
        "Linf", "normal", True, 10)


@pytest.mark.parametrize("raw,match", [
    ({"objective": {"name": "trades", "eps": 0.1}}, "belongs to the attack section"),
    ({"objective": {"name": "ard", "alpha": 1.5}}, "'objective.alpha' = 1.5 must be <= 1"),
    ({"objective": {"name": "gkl_kd", "prior_momentum": 0}}, "prior_momentum' = 0 must be > 0"),
    ({"objective": {"name": "lbgat", "natural_arch": "resnet-99"}}, "resnet-99"),
    ({"objective": {"name": "trades"}, "attack": {"init": "gauss"}}, "gauss"),
    ({"objective": {"name": "trades"}, "attack": {"schedule": "ramp"}}, "ramp"),
    ({"objective": {"name": "trades"}, "attack": {"norm": "l1"}}, "did you mean .L1."),
    ({"optim": {"milestones": [3, 3]}}, "each once"),
    ({"objective": {"name": "gkl_at", "two_view": False}, "data": {"augment": "autoaugment"}},
     "set objective.two_view: true"),
    ({"data": {"synthetic_npz": ["a.npz", "b.npz", "a.npz"]}}, r"synthetic_npz\[0\] and \[2\]"),
])
def test_objective_and_attack_mistakes_are_one_line(raw, match):
    with pytest.raises((InputError, KeyError), match=match) as info:
        C.from_dict(raw)
    assert "\n" not in str(info.value)


def test_build_objective_validates_like_a_config():
    from advtrain.config import build_objective

    with pytest.raises(InputError, match="'objective.alpha' = 1.5 must be <= 1"):
        build_objective("ard", dataset="cifar10", teacher=torch.nn.Linear(1, 10), alpha=1.5)
    obj = build_objective("rslad", dataset="cifar10", teacher=torch.nn.Linear(1, 10))
    assert (obj.attack.steps, obj.attack.alpha, obj.attack.eps) == (10, S2, E8)


def test_config_modules_import_no_circle():
    """The validator modules never import the config they validate (the objectives sit below the
    config package, tests/core/test_imports.py keeps them there), and types sits below check."""
    import ast

    import advtrain.config.check as check
    import advtrain.config.types as types

    for module in (check, types):
        tree = ast.parse(open(module.__file__).read())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        bad = {m for m in names if m == "advtrain.config"}
        if module is types:  # below the validator
            bad |= {m for m in names if m == "advtrain.config.check"}
        assert not bad, (module.__name__, bad)
