"""advtrain.evaluate, the sanity report (advtrain.eval.sanity) and RobustBench cards (advtrain.eval.cards)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import advtrain
from advtrain.eval import cards
from advtrain.eval import sanity as checks
from advtrain.errors import InputError, UnknownNameError
from advtrain.eval.evaluator import make_pgd
from advtrain.utils import format_eps


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, num_classes))


class Probabilities(nn.Module):
    """A model that (wrongly) ends with a softmax."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x):
        return self.net(x).softmax(1)


class Noisy(nn.Module):
    """A randomised defense: Gaussian noise on the input, also in eval mode."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x):
        return self.net(x + 0.1 * torch.randn_like(x))


def data_for(model, n: int = 16):
    """Images plus labels = the model's own predictions (clean accuracy 100%)."""
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    return x, y


FAST = dict(version="custom", attacks=["apgd-ce"], n_iter=3, batch_size=16, sanity_n=16,
            sanity_steps=2, progress=False)


def test_evaluate_fields_consistent():
    model = tiny_cnn()
    x, y = data_for(model)
    model.train()
    out = advtrain.evaluate(model, x, y, return_adv=True, pgd_steps=2, **FAST)
    assert model.training, "train mode must be restored"
    assert out["clean_acc"] == 1.0 == out["per_attack"]["clean"]
    assert 0.0 <= out["robust_acc"] <= out["clean_acc"]
    assert out["robust_acc"] == out["per_attack"]["apgd-ce"]
    assert 0.0 <= out["pgd_acc"] <= 1.0 and out["pgd_steps"] == 2
    assert (out["n_ex"], out["norm"], out["version"], out["attacks"]) == (16, "Linf", "custom",
                                                                         ["apgd-ce"])
    assert out["eps"] == pytest.approx(8 / 255)
    delta = (out["x_adv"] - x).abs().amax()
    assert delta <= 8 / 255 + 1e-6 and out["x_adv"].min() >= 0 and out["x_adv"].max() <= 1
    with torch.no_grad():  # y_adv are the model's predictions on x_adv (near-ties excluded: batching)
        top2 = model.eval()(out["x_adv"]).topk(2, dim=1)
    clear = top2.values[:, 0] - top2.values[:, 1] > 1e-4
    assert clear.sum() >= 12 and torch.equal(top2.indices[clear, 0], out["y_adv"][clear])
    assert out["sanity"]["eps_ball"]["n_outside"] == 0
    codes = [f["code"] for f in out["flags"]]
    assert codes == ["train-mode"]
    assert set(out["seconds"]) >= {"clean", "autoattack/apgd-ce", "pgd-2"}


def test_evaluate_without_adv_and_sanity():
    model = tiny_cnn().eval()
    x, y = data_for(model, 8)
    out = advtrain.evaluate(model, x, y, sanity=False, eps="4/255", **{**FAST, "sanity_n": 8})
    assert out["eps"] == pytest.approx(4 / 255)
    assert "x_adv" not in out and "pgd_acc" not in out
    assert out["flags"] == [] and "pgd" not in out["sanity"]
    assert not model.training


@pytest.mark.parametrize("kwargs, err", [
    (dict(version="fast"), UnknownNameError),
    (dict(version="custom"), InputError),
    (dict(version="custom", attacks=["apgd-xx"]), UnknownNameError),
    (dict(version="standard", attacks=["apgd-ce"]), InputError),
    (dict(norm="L3"), UnknownNameError),
    (dict(eps=-0.1), InputError),
    (dict(eps="8/0"), InputError),
    (dict(batch_size=0), InputError),
])
def test_evaluate_rejects_bad_arguments(kwargs, err):
    model = tiny_cnn()
    x, y = data_for(model, 4)
    with pytest.raises(err) as e:
        advtrain.evaluate(model, x, y, **kwargs)
    assert "\n" not in str(e.value)


def test_evaluate_rejects_unscaled_images():
    model = tiny_cnn()
    x, y = data_for(model, 4)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        advtrain.evaluate(model, x * 255, y)


def _sanity_codes(model, n=16):
    x, y = data_for(model, n)
    model.eval()
    _, flags = checks.run_sanity(model, x, y, eps=8 / 255, n=n, pgd_steps=2, batch_size=n,
                                 make_pgd=lambda e, k: make_pgd(e, k, "Linf"))
    return {f["code"] for f in flags}


def test_sanity_flags_fire_on_probabilities_and_randomness_only():
    assert _sanity_codes(tiny_cnn()) == set()
    assert "probability-outputs" in _sanity_codes(Probabilities())
    noisy = _sanity_codes(Noisy())
    assert "randomized-model" in noisy and "probability-outputs" not in noisy


def test_sanity_flags_reach_evaluate_result():
    model = Noisy()
    x, y = data_for(model)
    out = advtrain.evaluate(model.eval(), x, y, **FAST)
    codes = {f["code"] for f in out["flags"]}
    assert "randomized-model" in codes
    for f in out["flags"]:
        assert f["code"] in checks.CODES and f["doc"] == f"docs/FLAGS.md#{f['code']}"


class MeanThreshold(nn.Module):
    """Class 0 iff the image mean exceeds 0.5."""

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([m, torch.full_like(m, 0.5)], 1)


def test_pgd_convergence_flag_logic():
    """Stub attacks: only the 2K-step one (or only a restart) flips the prediction."""
    x, y = torch.full((4, 3, 2, 2), 0.9), torch.zeros(4, dtype=torch.long)
    flip = lambda model, xb, yb: 1 - xb  # noqa: E731
    keep = lambda model, xb, yb: xb  # noqa: E731
    for stronger, expect in ((keep, set()), (flip, {"pgd-not-converged"})):
        accs, flags = checks.check_pgd_convergence(
            MeanThreshold(), x, y, 8 / 255, 5, lambda e, k: stronger if k == 10 else keep, 4)
        assert {f["code"] for f in flags} == expect
        assert accs["pgd-5"] == 1.0 and accs["pgd-10"] == (0.0 if expect else 1.0)
    calls = []

    def alternate(e, k):  # the second PGD-K run (a restart) succeeds on every example
        calls.append(k)
        return flip if calls.count(5) == 2 else keep
    accs, flags = checks.check_pgd_convergence(MeanThreshold(), x, y, 8 / 255, 5, alternate, 4)
    assert accs["pgd-5x2"] == 0.0 and [f["code"] for f in flags] == ["pgd-not-converged"]


def test_every_flag_code_is_documented():
    with open("docs/FLAGS.md") as fh:
        headings = {line[3:].strip() for line in fh if line.startswith("## ")}
    assert headings == set(checks.CODES)


def test_verify_ball_counts_violations():
    x = torch.full((3, 3, 4, 4), 0.5)
    x_adv = x.clone()
    x_adv[1, 0, 0, 0] += 0.1            # outside Linf 8/255
    x_adv[2, 0, 0, 0] = 1.2             # outside [0,1] too
    report, flags = checks.verify_ball(x, x_adv, 8 / 255, "Linf")
    assert report["n_outside"] == 2 and report["n_out_of_range"] == 1
    assert [f["code"] for f in flags] == ["outside-eps-ball"]
    report, flags = checks.verify_ball(x, x.clone(), 0.0, "L2")
    assert report["n_outside"] == 0 and flags == []


def test_evaluation_flags_robust_above_clean_and_square():
    per = {"clean": 0.8, "apgd-ce": 0.6, "apgd-t": 0.55, "fab-t": 0.55, "square": 0.40}
    codes = [f["code"] for f in checks.evaluation_flags(0.8, 0.9, per, ["aa says hi"])]
    assert codes == ["autoattack-check", "robust-above-clean", "square-beats-whitebox"]
    per["square"] = 0.55
    assert checks.evaluation_flags(0.8, 0.55, per) == []


def _result(clean=0.85312, robust=0.57089, n_ex=16, flags=(), **settings):
    from advtrain.eval.settings import EvalResult, EvalSettings

    s = EvalSettings(**settings)
    attacks = list(s.attacks or ("apgd-ce", "apgd-t", "fab-t", "square"))
    return EvalResult(settings=s, clean_acc=clean, robust_acc=robust,
                      per_attack={"clean": clean, "apgd-ce": robust}, attacks=attacks,
                      n_ex=n_ex, device="cpu", seconds={"clean": 1.0}, flags=list(flags))


def _info(**kw):
    base = dict(name="Me2024Test_WRN-34-10", dataset="cifar10", threat_model="Linf",
                architecture="WideResNet-34-10")
    return cards.CardInfo(**{**base, **kw})


#: the fields of RobustBench's own cards beyond robustbench.utils.ModelInfo (installed 1.1.1)
RB_EXTRA = {"unreliable"}


def _load_as_modelinfo(data: dict):
    """The card as RobustBench's ModelInfo: every key is a ModelInfo field or RobustBench's own
    ``unreliable`` (a bool), and no value is null."""
    from robustbench.utils import ModelInfo

    assert set(data) - RB_EXTRA <= {f for f in ModelInfo.__dataclass_fields__}
    assert isinstance(data["unreliable"], bool)
    assert None not in data.values()
    return ModelInfo(**{k: v for k, v in data.items() if k not in RB_EXTRA})


def test_card_loads_into_robustbench_modelinfo(tmp_path):
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"abc")
    card, side = cards.write_card(_result(), _info(venue="NeurIPS 2024"), out_dir=tmp_path / "mi",
                                  command=["advtrain", "eval", "c.pt"], checkpoint=ckpt)
    assert card == tmp_path / "mi" / "cifar10" / "Linf" / "Me2024Test_WRN-34-10.json"
    data = json.loads(card.read_text())
    info = _load_as_modelinfo(data)
    assert (info.clean_acc, info.autoattack_acc, info.eps) == ("85.31", "57.09", "8/255")
    assert info.dataset == "cifar10" and info.additional_data is False
    meta = json.loads(side.read_text())
    assert meta["per_attack"]["apgd-ce"] == pytest.approx(0.57089)
    assert meta["command"] == "advtrain eval c.pt"
    import hashlib
    assert meta["checkpoint"]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert set(meta["versions"]) >= {"torch", "torchvision", "pyautoattack", "robustbench",
                                     "advtrain"}
    assert sorted(p.name for p in card.parent.iterdir()) == [side.name, card.name]  # no temp files


def test_full_standard_card_has_exactly_robustbench_fields(tmp_path):
    """Issue 19.1: a full standard evaluation writes RobustBench's fields, reported = measured."""
    card, _ = cards.write_card(_result(n_ex=10000), _info(), out_dir=tmp_path)
    data = json.loads(card.read_text())
    assert list(data) == ["link", "name", "authors", "additional_data", "number_forward_passes",
                          "dataset", "venue", "architecture", "eps", "clean_acc", "reported",
                          "autoattack_acc", "unreliable"]
    assert data["reported"] == data["autoattack_acc"] == "57.09" and data["unreliable"] is False
    _load_as_modelinfo(data)


@pytest.mark.parametrize("n_ex, settings, needle", [
    (100, dict(version="custom", attacks=("apgd-ce", "apgd-t")),
     "AutoAttack custom (apgd-ce, apgd-t), on 100 of 10000 test images."),
    (10000, dict(n_iter=10), "AutoAttack standard (apgd-ce, apgd-t, fab-t, square), n_iter 10, "
                             "on 10000 of 10000 test images."),
    (500, {}, "on 500 of 10000 test images."),
])
def test_partial_card_says_what_it_is(tmp_path, n_ex, settings, needle):
    """Issue 19.1: not standard AutoAttack on the full test set -> footnote names the attacks and
    the number of images, no 'reported' unless the user gives one, 'unreliable' written."""
    card, side = cards.write_card(_result(n_ex=n_ex, **settings), _info(), out_dir=tmp_path)
    data = json.loads(card.read_text())
    assert data["footnote"].endswith(needle) and "reported" not in data
    assert data["unreliable"] is False and json.loads(side.read_text())["full_standard"] is False
    _load_as_modelinfo(data)
    card, _ = cards.write_card(_result(n_ex=n_ex, **settings),
                               _info(reported="60.1", footnote="Trained by me."), out_dir=tmp_path)
    data = json.loads(card.read_text())
    assert data["reported"] == "60.10" and data["footnote"].startswith("Trained by me. AutoAttack ")
    assert data["footnote"].endswith(needle)


def test_card_unreliable_when_flagged_and_footnote_absent_not_null(tmp_path):
    flagged = [checks.flag("pgd-not-converged", "PGD-20 beats PGD-10")]
    card, _ = cards.write_card(_result(n_ex=10000, flags=flagged), _info(), out_dir=tmp_path)
    data = json.loads(card.read_text())
    assert data["unreliable"] is True and "footnote" not in data


@pytest.mark.parametrize("value", ["abc", "101", "-1", "nan"])
def test_card_refuses_a_bad_reported_value(value):
    with pytest.raises(InputError, match="percentage in \\[0, 100\\]"):
        _info(reported=value)


def test_card_writes_eps_as_typed():
    """Issue 19.3: k/255 in RobustBench's fraction form, anything else as the decimal typed."""
    from advtrain.eval.settings import eps_note

    for eps, text in (("8/255", "8/255"), (8 / 255, "8/255"), (0.031, "0.031"), ("4/255", "4/255"),
                      (0.5, "0.5")):
        assert cards.card_fields(_result(eps=eps), _info())["eps"] == text
    assert "is not 8/255 (0.03137)" in eps_note(0.031) and eps_note(8 / 255) is None
    assert eps_note(0.5) is None and "\n" not in eps_note(0.0314)


def test_interrupted_card_write_leaves_no_card_and_a_rerun_repairs(tmp_path, monkeypatch):
    """Issue 16.4: card and sidecar committed as one; the card is renamed last."""
    import os

    real = os.replace
    card, side = cards.card_paths(tmp_path, _info())

    def fail_on_card(src, dst):
        if str(dst) == str(card):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_card)
    with pytest.raises(OSError):
        cards.write_card(_result(), _info(), out_dir=tmp_path, overwrite=False)
    monkeypatch.setattr(os, "replace", real)
    assert side.exists() and not card.exists()  # sidecar alone: the mark of an unfinished write
    assert [p.name for p in card.parent.iterdir()] == [side.name]  # no temporaries left
    cards.write_card(_result(), _info(), out_dir=tmp_path, overwrite=False)  # repaired, no flag
    assert card.exists()


@pytest.mark.parametrize("kwargs", [dict(dataset="mnist"), dict(threat_model="l1"),
                                    dict(name="../evil")])
def test_card_rejects_bad_names(kwargs):
    with pytest.raises((InputError, UnknownNameError)):
        _info(**kwargs)


def test_percent_and_eps_strings():
    assert cards.percent(0.5709) == "57.09" and cards.percent(1) == "100.00"
    assert format_eps(8 / 255) == "8/255" and format_eps(0.5) == "0.5"
    assert cards.display_arch("wrn-28-10-silu") == "WideResNet-28-10"
