"""One evaluation settings object (issue 15 step 5, issue 16.3): checked once, passed whole, and the
fingerprint an AutoAttack state file is bound to."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import advtrain
from advtrain.errors import CheckpointError, InputError, UnknownNameError
from advtrain.eval.settings import OUTCOME, EvalResult, EvalSettings

REPO = Path(__file__).resolve().parents[2]
FAST = dict(version="custom", attacks=["apgd-ce"], n_iter=2, batch_size=8, sanity=False,
            progress=False)


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()


def data(model, n=8):
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x).argmax(1)


def test_settings_are_frozen_resolved_and_checked_on_construction():
    s = EvalSettings(eps="8/255", version="custom", attacks=["apgd-ce", "apgd-t"])
    assert s.eps == pytest.approx(8 / 255) and s.attacks == ("apgd-ce", "apgd-t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.eps = 0.5
    assert s.replace(seed=3).seed == 3 and s.seed == 0
    for bad, err, needle in ((dict(norm="l1"), UnknownNameError, "did you mean 'L1'"),
                             (dict(precision="fp16"), UnknownNameError, "bf16, fp32"),
                             (dict(n_iter=0), InputError, "n_iter"),
                             (dict(n_targets=True), InputError, "n_targets"),
                             (dict(pgd_steps=0), InputError, "pgd_steps"),
                             (dict(eps="8/0"), InputError, "invalid eps")):
        with pytest.raises(err, match=needle):
            EvalSettings(**bad)


def test_standard_means_the_official_budget_in_fp32():
    assert EvalSettings().standard
    for change in (dict(n_iter=10), dict(n_restarts=2), dict(n_queries=100), dict(n_targets=3),
                   dict(precision="bf16"), dict(version="plus")):
        assert not EvalSettings(**change).standard, change


@pytest.mark.parametrize("field", OUTCOME)
def test_fingerprint_changes_with_every_outcome_setting(field):
    base = EvalSettings(version="custom", attacks=["apgd-ce"])
    other = {"norm": "L2", "eps": 0.5, "version": "custom", "attacks": ["apgd-t"], "seed": 5,
             "batch_size": 7, "precision": "bf16", "n_iter": 9, "n_restarts": 2,
             "n_queries": 11, "n_targets": 3}
    changed = base.replace(**{field: other[field]}) if field != "version" else \
        EvalSettings(version="standard")
    assert changed.fingerprint() != base.fingerprint()
    differ = {k for k in base.fingerprint() if base.fingerprint()[k] != changed.fingerprint()[k]}
    assert field in differ


def test_weak_budget_state_is_refused_by_a_stronger_run(tmp_path):
    """Issue 16.3: a state written with --n-iter 2 is not reused by an --n-iter 4 run (nor by
    other weights or another precision); the message names the setting."""
    model = tiny()
    x, y = data(model)
    state = tmp_path / "aa.pt"
    first = advtrain.evaluate(model, x, y, state_path=state, **FAST)
    for change, name in ((dict(n_iter=4), "n_iter"), (dict(n_restarts=3), "n_restarts"),
                         (dict(seed=1), "seed"), (dict(batch_size=4), "batch_size")):
        with pytest.raises(CheckpointError, match=rf"different [a-z_, ]*{name}") as err:
            advtrain.evaluate(model, x, y, state_path=state, **{**FAST, **change})
        assert "\n" not in str(err.value)
    other = tiny()
    with torch.no_grad():
        other[1].bias.add_(1.0)
    with pytest.raises(CheckpointError, match=r"different model\)"):
        advtrain.evaluate(other, x, y, state_path=state, **FAST)
    again = advtrain.evaluate(model, x, y, state_path=state, **FAST)
    assert again.per_attack == first.per_attack


def test_bind_carries_precision_weights_and_data():
    model = tiny()
    x, y = data(model)
    key = EvalSettings(precision="bf16").bind(model, x, y)
    assert key["precision"] == "bf16" and key["n_ex"] == 8
    assert key["data"] != EvalSettings().bind(model, x.flip(0), y.flip(0))["data"]
    assert len(key["model"]) == 64


def test_result_is_typed_and_reads_like_the_former_dict():
    model = tiny()
    x, y = data(model)
    out = advtrain.evaluate(model, x, y, eps="2/255", **FAST)
    assert isinstance(out, EvalResult) and out.settings.eps == pytest.approx(2 / 255)
    assert out["eps"] == out.settings.eps and out["clean_acc"] == out.clean_acc == 1.0
    assert "pgd_acc" not in out and "x_adv" not in out and out["attacks"] == ["apgd-ce"]
    rec = out.record()
    assert rec["eps_str"] == "2/255" and rec["standard"] is False and "x_adv" not in rec
    with pytest.raises(InputError, match="not both"):
        advtrain.evaluate(model, x, y, EvalSettings(), seed=1)


def _imports(path: Path) -> set:
    """Every module imported anywhere in ``path`` (module and function level)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_evaluation_modules_import_one_way():
    """Issue 15 step 2: no evaluation <-> evaluation_dist circle; attacks/autoattack.py imports
    nothing from advtrain (it raises attacks.AttackError)."""
    dist = _imports(REPO / "advtrain" / "eval" / "sharded.py")
    assert "advtrain.eval.evaluator" not in dist
    assert not {m for m in _imports(REPO / "attacks" / "autoattack.py") if m.startswith("advtrain")}
    settings = _imports(REPO / "advtrain" / "eval" / "settings.py")
    assert not settings & {"advtrain.eval.evaluator", "advtrain.eval.sharded", "advtrain.eval.cards"}


def test_constants_have_one_owner():
    """Issue 15 step 7: norms, versions, attack names and datasets are imported, not copied."""
    import attacks
    from advtrain.eval import cards
    from advtrain.eval import evaluator as evaluation
    from advtrain.data.names import DATASETS

    from advtrain.hub import zoo

    assert cards.CARD_THREAT_MODELS == tuple(attacks.NORMS) + ("corruptions",)
    # one meaning per name: no THREAT_MODELS; the zoo's: the norms RobustBench has tables for
    assert zoo.ZOO_THREAT_MODELS == tuple(n for n in attacks.NORMS if n not in zoo.NO_LEADERBOARD)
    assert not hasattr(cards, "THREAT_MODELS") and not hasattr(zoo, "THREAT_MODELS")
    owners = {'("Linf", "L2", "L1")': "attacks/base.py", '"standard", "plus"': "attacks/autoattack.py",
              '"apgd-ce", "apgd-dlr"': "attacks/autoattack.py",
              '"cifar10", "cifar100"': "advtrain/data/facts.py",  # the one table of datasets
              '"CIFAR-10-C"': "advtrain/data/facts.py"}
    for path in sorted([*(REPO / "advtrain").rglob("*.py"), *(REPO / "attacks").rglob("*.py")]):
        module = path.relative_to(REPO).as_posix()
        text = path.read_text()
        for copy, owner in owners.items():
            assert module == owner or copy not in text, f"{module} copies {copy}; import it from {owner}"
    assert not hasattr(evaluation, "NORMS") and not hasattr(evaluation, "VERSIONS")
    assert set(DATASETS) == {"cifar10", "cifar100", "imagenet", "imagefolder"}
    from advtrain.eval import sanity as checks
    assert not hasattr(checks, "sanity_ok")


def test_one_accuracy_loop():
    """advtrain.eval.evaluator.accuracy is the one loop (the checks use it too): counts match a direct
    float64 count, the mode is restored, a seeded attack repeats and leaves the caller's RNG."""
    from advtrain.eval import sanity as checks
    from advtrain.eval import evaluator as evaluation
    from advtrain.eval.evaluator import make_pgd

    model = tiny()
    x, y = data(model, 20)
    y[:5] = (y[:5] + 1) % 10
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).double().mean().item()
    model.train()
    assert evaluation.accuracy(model, x, y, batch_size=6, progress=False) == pytest.approx(expected)
    assert model.training
    rng = torch.get_rng_state()
    pgd = make_pgd(8 / 255, 2, "Linf")
    first = evaluation.accuracy(model, x, y, batch_size=6, attack=pgd, seed=3, progress=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert first == evaluation.accuracy(model, x, y, batch_size=6, attack=pgd, seed=3,
                                        progress=False) <= expected
    assert checks._attack_acc(model, make_pgd(0.0, 2, "Linf"), x, y, 6) == pytest.approx(expected)
