"""AutoAttackAdapter over pyautoattack: per-attack accuracies, checks, contiguity, resumable state."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import AAResult, AttackError, AutoAttackAdapter
from attacks.autoattack import AttackStateError, UnknownChoiceError

EPS = 4 / 255


def linear_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


@pytest.fixture
def data():
    model = linear_net()
    x = torch.rand(24, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:4] = (y[:4] + 1) % 10  # four clean mistakes
    return model, x, y


def adapter(**kw) -> AutoAttackAdapter:
    kw.setdefault("attacks", ["apgd-ce"])
    return AutoAttackAdapter(eps=EPS, version="custom", n_iter=3, batch_size=16, **kw)


def test_custom_apgd_ce_result(data):
    model, x, y = data
    model.train()
    rng = torch.get_rng_state()
    res = adapter().run(model, x, y)
    assert isinstance(res, AAResult) and res.version == "custom" and res.attacks == ["apgd-ce"]
    assert model.training  # eval during the run only
    assert torch.equal(torch.get_rng_state(), rng)  # pyautoattack's manual_seed does not leak
    assert res.clean.sum() == 20 and not (res.robust & ~res.clean).any()
    assert list(res.per_attack) == ["clean", "apgd-ce"]
    assert res.per_attack["clean"] == pytest.approx(20 / 24)
    assert res.per_attack["apgd-ce"] == pytest.approx(res.robust.float().mean().item())
    assert res.per_attack["apgd-ce"] < res.per_attack["clean"]  # the attack fooled someone
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6 and 0 <= res.x_adv.min() <= res.x_adv.max() <= 1
    with torch.no_grad():  # y_adv are the predictions on x_adv (AA batches them: near-ties excluded)
        top2 = model.eval()(res.x_adv).topk(2, dim=1)
    clear = top2.values[:, 0] - top2.values[:, 1] > 1e-4
    assert clear.sum() >= 20 and torch.equal(top2.indices[clear, 0], res.y_adv[clear])
    moved = (res.x_adv != x).flatten(1).any(1)
    assert torch.equal(moved, res.clean & ~res.robust)  # only successful attacks replace x
    assert set(res.seconds) == {"apgd-ce", "total"} and res.seconds["total"] > 0
    assert res.checks == []


def test_non_contiguous_input_and_fixed_seed_reproduce(data):
    model, x, y = data
    x_t = x.transpose(2, 3)
    assert not x_t.is_contiguous()
    first = adapter(attacks=["apgd-ce", "apgd-t"]).run(model, x_t, y)
    second = adapter(attacks=["apgd-ce", "apgd-t"]).run(model, x_t.contiguous(), y)
    assert torch.equal(first.x_adv, second.x_adv)
    assert first.per_attack == second.per_attack
    assert first.per_attack["apgd-t"] <= first.per_attack["apgd-ce"]


def test_probability_outputs_are_reported(data):
    model, x, y = data
    res = adapter().run(nn.Sequential(model, nn.Softmax(dim=1)), x, y)
    assert any("probability distribution" in msg for msg in res.checks)


def test_state_file_resumes_after_an_interruption(data, tmp_path, monkeypatch):
    model, x, y = data
    attacks = ["apgd-ce", "apgd-dlr"]
    reference = adapter(attacks=attacks).run(model, x, y)
    state = tmp_path / "aa_state.pt"
    original = AutoAttackAdapter._run_one
    ran = []

    def interrupted(self, adversary, name, *args):
        if name == "apgd-dlr":
            raise KeyboardInterrupt
        ran.append(name)
        return original(self, adversary, name, *args)

    monkeypatch.setattr(AutoAttackAdapter, "_run_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        adapter(attacks=attacks, state_path=str(state)).run(model, x, y)
    assert ran == ["apgd-ce"] and state.is_file()

    def recording(self, adversary, name, *args):
        ran.append(name)
        return original(self, adversary, name, *args)

    monkeypatch.setattr(AutoAttackAdapter, "_run_one", recording)
    resumed = adapter(attacks=attacks, state_path=state).run(model, x, y)
    assert ran == ["apgd-ce", "apgd-dlr"]  # apgd-ce was not run again
    assert resumed.per_attack == reference.per_attack
    assert torch.equal(resumed.x_adv, reference.x_adv) and torch.equal(resumed.robust, reference.robust)
    ran.clear()
    again = adapter(attacks=attacks, state_path=state).run(model, x, y)
    assert ran == [] and again.seconds == resumed.seconds
    with pytest.raises(AttackStateError, match="another evaluation"):
        adapter(attacks=["apgd-ce"], state_path=state).run(model, x, y)
    with pytest.raises(AttackStateError):
        adapter(attacks=attacks, state_path=state, state_key={"data": "other"}).run(model, x, y)


def test_user_errors():
    """The adapter is a standalone library: its own error type, one line each."""
    with pytest.raises(UnknownChoiceError, match="did you mean 'standard'"):
        AutoAttackAdapter(version="standrad")
    with pytest.raises(AttackError, match="custom"):
        AutoAttackAdapter(version="custom")
    with pytest.raises(UnknownChoiceError, match="apgd-ce"):
        AutoAttackAdapter(version="custom", attacks=["apgd-cd"])
    with pytest.raises(AttackError, match="version='custom'"):
        AutoAttackAdapter(version="standard", attacks=["apgd-ce"])
    with pytest.raises(UnknownChoiceError):
        AutoAttackAdapter(norm="Linfinity")
    with pytest.raises(AttackError):
        AutoAttackAdapter(eps=-1.0)
    with pytest.raises(AttackError):
        AutoAttackAdapter(batch_size=0)
    for knob in ("n_iter", "n_restarts", "n_queries", "n_targets"):
        with pytest.raises(AttackError, match=knob):
            AutoAttackAdapter(**{knob: 0})
    assert issubclass(AttackError, ValueError) and issubclass(AttackStateError, AttackError)


def test_standard_version_lists_the_four_attacks(data):
    model, x, y = data
    res = AutoAttackAdapter(eps=0.0, version="standard", n_iter=1, n_queries=1).run(model, x[:4], y[:4])
    assert res.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert list(res.per_attack) == ["clean", *res.attacks]


def test_progress_prints_one_line_per_attack(data, capsys):
    model, x, y = data
    res = adapter(attacks=["apgd-ce", "apgd-t"], progress=True).run(model, x, y)
    err = capsys.readouterr().err
    for name in ("apgd-ce", "apgd-t"):
        assert f"[autoattack] {name}: robust accuracy {res.per_attack[name]:.2%}" in err
    quiet = adapter(attacks=["apgd-ce"]).run(model, x, y)
    assert "[autoattack]" not in capsys.readouterr().err and quiet.per_attack["apgd-ce"] >= 0


def test_state_file_is_bound_to_the_model_and_the_settings(data, tmp_path):
    """Issue #10: a state file of model A is refused for model B (and for another eps, seed, subset),
    naming what differs, instead of continuing A's attacks and reporting A's numbers for B.
    The adapter binds its own settings; the weights and data digests come from the caller
    (advtrain's ``EvalSettings.bind``; tests/eval/test_evaluation.py checks that path end to end)."""
    model, x, y = data
    state = tmp_path / "aa_state.pt"
    first = adapter(state_path=state, state_key={"model": "A", "data": "D"}).run(model, x, y)
    cases = [({"state_key": {"model": "B", "data": "D"}}, x, y, "model"),
             ({"eps": EPS / 2}, x, y, "eps"), ({"seed": 1}, x, y, "seed"),
             ({}, x[:20], y[:20], "n_ex"), ({"state_key": {"model": "A", "data": "E"}}, x, y, "data"),
             ({"n_iter": 4}, x, y, "n_iter"), ({"batch_size": 8}, x, y, "batch_size"),
             ({"n_restarts": 2}, x, y, "n_restarts"), ({"n_targets": 3}, x, y, "n_targets")]
    for kw, xs, ys, field in cases:
        kw = {"eps": EPS, "n_iter": 3, "batch_size": 16, "state_key": {"model": "A", "data": "D"},
              **kw}
        ad = AutoAttackAdapter(version="custom", attacks=["apgd-ce"], state_path=state, **kw)
        with pytest.raises(AttackStateError, match=f"different [a-z_, ]*{field}") as err:
            ad.run(model, xs, ys)
        assert "\n" not in str(err.value)
    again = adapter(state_path=state, state_key={"model": "A", "data": "D"}).run(model, x, y)
    assert again.per_attack == first.per_attack and torch.equal(again.x_adv, first.x_adv)


def test_budget_knobs_reach_pyautoattack(data):
    """n_iter / n_restarts / n_queries / n_targets set the attack objects pyautoattack runs."""
    model, _, _ = data
    adv = AutoAttackAdapter(version="standard", n_iter=7, n_restarts=2, n_queries=11,
                            n_targets=3).adversary(model)
    assert adv.apgd.n_iter == adv.apgd_targeted.n_iter == adv.fab.n_iter == 7
    assert adv.apgd.n_restarts == adv.fab.n_restarts == adv.square.n_restarts == 2
    assert adv.square.n_queries == 11
    assert adv.apgd_targeted.n_target_classes == adv.fab.n_target_classes == 3
    default = AutoAttackAdapter(version="standard").adversary(model)
    assert (default.apgd.n_iter, default.square.n_queries, default.apgd_targeted.n_target_classes) \
        == (100, 5000, 9)


def test_attack_batch_refuses_an_unknown_attack(data):
    model, x, y = data
    adv = adapter().adversary(model)
    with pytest.raises(UnknownChoiceError, match="did you mean 'apgd-ce'"):
        AutoAttackAdapter.attack_batch(adv, "apgd-cd", x, y)
