"""A training attack registered in one place (``attacks.TRAINING_ATTACKS``) trains through a YAML
config: the config validator reads its options and rules from its class, the schedule hands it each
epoch's budget through ``set_budget``, the run records it and resumes it."""
from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
import yaml

from advtrain import config as C
from advtrain.errors import InputError
from attacks import NORMS, TRAINING_ATTACKS, Attack, setting
from trainer_helpers import one_thread, tiny_config


@dataclasses.dataclass(frozen=True)
class StepOptions:
    norm: str = setting("Linf", choices=NORMS)
    fraction: float = setting(1.0, gt=0, max=1)  # of the radius the step goes


class OneSignStep(Attack):
    """Test-only: x + fraction * eps * sign(grad CE), clipped to [0, 1]; records every budget."""

    Options = StepOptions
    budgets: list = []
    calls: list = []

    def __init__(self, eps=0.0, norm="Linf", fraction=1.0, loss=None):
        super().__init__(eps, norm=norm)
        self.fraction, self.loss = fraction, loss

    def set_budget(self, eps, step_size, steps):
        super().set_budget(eps, step_size, steps)
        OneSignStep.budgets.append((eps, step_size, steps))

    def perturb(self, model, x, y):
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y), xg)
        x_adv = (x + self.fraction * self.eps * grad.sign()).clamp(0, 1).detach()
        OneSignStep.calls.append((self.eps, float((x_adv - x).abs().max())))
        return x_adv


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(TRAINING_ATTACKS, "one_sign_step", OneSignStep)  # the one place
    OneSignStep.budgets, OneSignStep.calls = [], []
    return OneSignStep


def _yaml(tmp_path, **attack):
    raw = tiny_config(str(tmp_path), optim={"epochs": 2}, eval={"test_pgd_steps": 0},
                      objective={"name": "pgd_at"}, data={"train_subset": 8, "test_subset": 0})
    raw["attack"] = {"name": "one_sign_step", "eps": "8/255", "schedule": "executed", **attack}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_registered_attack_trains_through_a_yaml_and_resumes(tmp_path, registered):
    from advtrain import fit

    with one_thread():
        run_dir = fit(_yaml(tmp_path, fraction=0.5), stop_after=1)
    # executed schedule, E = 2: epoch 1 hands (eps/2, eps/4, 5) to set_budget (SPEC §3)
    eps = 8 / 255
    assert registered.budgets, "the schedule handed no budget"
    got = registered.budgets[-1]
    assert math.isclose(got[0], eps / 2, rel_tol=1e-12) and math.isclose(got[1], eps / 4, rel_tol=1e-12)
    assert got[2] == 5
    assert len(registered.calls) == 1  # 8 images, batch 8: one step
    for radius, moved in registered.calls:  # the step goes fraction 0.5 of the epoch's radius
        assert math.isclose(radius, eps / 2, rel_tol=1e-12) and moved <= 0.5 * radius + 1e-6
        assert moved > 0.25 * radius
    stored = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))["attack"]
    assert stored["name"] == "one_sign_step" and stored["fraction"] == 0.5 and "init" not in stored
    with one_thread():
        fit(None, run_dir=run_dir, resume=True)  # the stored config resolves to the same attack
    got = registered.budgets[-1]
    assert math.isclose(got[0], eps, rel_tol=1e-12) and got[2] == 5  # epoch 2 of 2


def test_a_registered_attacks_rules_are_the_configs(tmp_path, registered):
    with pytest.raises(InputError, match=r"'attack.fraction' = 2.0 must be <= 1") as info:
        C.load(_yaml(tmp_path, fraction=2))
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"'attack.init' is an option of attack 'pgd', not of attack "
                                         r"'one_sign_step'"):
        C.load(_yaml(tmp_path, init="normal"))
    with pytest.raises(InputError, match=r"'attack.fraction' must be a number"):
        C.load(_yaml(tmp_path, fraction="half"))


def test_the_schedule_drives_the_budget_of_the_none_attack(tmp_path):
    """``none`` under the staged schedule: the trainer hands every epoch's budget to its set_budget."""
    from advtrain.train.loop import Trainer
    from advtrain.train.setup import prepare_run_dir

    from attacks import NoAttack

    raw = tiny_config(str(tmp_path), optim={"epochs": 8}, eval={"test_pgd_steps": 0},
                      objective={"name": "pgd_at"},
                      attack={"name": "none", "eps": "8/255", "schedule": "staged", "ramp": True})
    del raw["attack"]["step_size"], raw["attack"]["steps"]
    cfg, run_dir, state = prepare_run_dir(raw, None, False, False)
    trainer = Trainer(cfg, run_dir, state)
    objective = trainer.parts.objective
    # typed end to end: the objective holds the config's own resolved sections, not rebuilt copies
    assert objective.options is cfg.objective.options and objective.attack_settings is cfg.attack
    attack = objective.attack
    assert isinstance(attack, NoAttack)
    seen = []
    original = attack.set_budget
    attack.set_budget = lambda *b: (seen.append(b), original(*b))
    eps = 8 / 255
    for e in range(1, 9):
        trainer._set_epoch_hparams(e)
        assert math.isclose(attack.eps, eps * e / 8, rel_tol=1e-12)
    # staged thresholds for E = 8: (50*8)//200 = 2, 4, 6 -> K = 2, 2, 3, 3, 4, 4, 5, 5
    assert [b[2] for b in seen] == [2, 2, 3, 3, 4, 4, 5, 5]
    x, y = trainer.parts.test
    assert torch.equal(trainer.parts.objective.perturb(trainer.parts.model, x, y), x)


def _l1_yaml(tmp_path, **attack):
    raw = tiny_config(str(tmp_path), optim={"epochs": 2}, objective={"name": "pgd_at"},
                      data={"train_subset": 8, "test_subset": 8}, eval={"test_pgd_steps": 1})
    raw["attack"] = {"name": "pgd", "norm": "L1", "eps": 12, "schedule": "fixed", "steps": 2,
                     "step_size": 3, "ramp": False, **attack}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_an_l1_run_trains_from_a_yaml_and_resumes_bit_identically(tmp_path):
    """attack.norm L1 (radius 12: an L1 eps is a plain number above 1): the training attack and
    the per-epoch PGD test run in the L1 ball; stopped after epoch 1 and resumed, the weights equal
    an uninterrupted run's."""
    from advtrain import fit
    from advtrain.train import checkpoint as ck
    from trainer_helpers import states_equal

    cfg = C.load(_l1_yaml(tmp_path / "a"))
    assert (cfg.attack.norm, cfg.attack.eps, cfg.attack.step_size) == ("L1", 12.0, 3.0)
    with one_thread():
        ref = fit(_l1_yaml(tmp_path / "a"))
        part = fit(_l1_yaml(tmp_path / "b"), stop_after=1)
        resumed = fit(None, run_dir=part, resume=True)
    a, b = (ck.load(os.path.join(d, "last.pt")) for d in (ref, resumed))
    assert states_equal(a["model"], b["model"]) and a["epoch"] == b["epoch"] == 2
    assert yaml.safe_load(open(os.path.join(ref, "config.yaml")))["attack"]["norm"] == "L1"


@pytest.mark.parametrize("attack, needle", [
    ({"name": "fgsm"}, "attack 'fgsm' does not take attack.norm 'L1' (its choices: Linf, L2); the "
                       "training attacks that do: none, pgd, pgd_best; set attack.name"),
    ({"name": "n_fgsm"}, "the training attacks that do: none, pgd, pgd_best"),
    ({"norm": "Linf"}, "config key 'attack.eps' = 12 (attack.norm Linf) is outside [0, 1]"),
    ({"norm": "l1"}, "did you mean 'L1'"),
])
def test_l1_config_mistakes_are_one_line(tmp_path, attack, needle):
    from advtrain.errors import AdvtrainError

    with pytest.raises(AdvtrainError) as info:
        C.load(_l1_yaml(tmp_path, **attack))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_the_guard_refuses_l1(tmp_path):
    raw = yaml.safe_load(open(_l1_yaml(tmp_path)))
    raw["guard"] = {"policy": "warn"}
    raw["eval"]["every"] = 1
    with pytest.raises(InputError, match=r"guard.policy warn measures FGSM accuracy, which runs Linf "
                                         r"and L2 only \(attack.norm is L1\); set guard.policy: off"):
        C.from_dict(raw)
