"""advtrain.evaluate, the sanity report (advtrain.checks) and RobustBench cards (advtrain.cards)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import advtrain
from advtrain import cards, checks
from advtrain.errors import InputError, UnknownNameError
from advtrain.evaluation import make_pgd
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


def _result(clean=0.85312, robust=0.57089):
    return {"clean_acc": clean, "robust_acc": robust, "eps": 8 / 255, "norm": "Linf",
            "per_attack": {"clean": clean, "apgd-ce": robust}, "seconds": {"clean": 1.0},
            "flags": [], "sanity": {}, "n_ex": 16, "version": "standard", "attacks": [],
            "seed": 0}


def test_card_loads_into_robustbench_modelinfo(tmp_path):
    from robustbench.utils import ModelInfo

    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"abc")
    card, side = cards.write_card(_result(), out_dir=tmp_path / "mi", name="Me2024Test_WRN-34-10",
                                  dataset="cifar10", threat_model="Linf",
                                  architecture="WideResNet-34-10", venue="NeurIPS 2024",
                                  command=["advtrain", "eval", "c.pt"], checkpoint=ckpt)
    assert card == tmp_path / "mi" / "cifar10" / "Linf" / "Me2024Test_WRN-34-10.json"
    data = json.loads(card.read_text())
    info = ModelInfo(**data)
    assert (info.clean_acc, info.autoattack_acc, info.eps) == ("85.31", "57.09", "8/255")
    assert info.dataset == "cifar10" and info.additional_data is False
    assert set(data) <= {f for f in ModelInfo.__dataclass_fields__}
    meta = json.loads(side.read_text())
    assert meta["per_attack"]["apgd-ce"] == pytest.approx(0.57089)
    assert meta["command"] == "advtrain eval c.pt"
    import hashlib
    assert meta["checkpoint"]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert set(meta["versions"]) >= {"torch", "torchvision", "pyautoattack", "robustbench",
                                     "advtrain"}
    assert sorted(p.name for p in card.parent.iterdir()) == [side.name, card.name]  # no temp files


@pytest.mark.parametrize("kwargs", [dict(dataset="mnist"), dict(threat_model="L1"),
                                    dict(name="../evil")])
def test_card_rejects_bad_names(tmp_path, kwargs):
    args = dict(out_dir=tmp_path, name="ok", dataset="cifar10", threat_model="Linf",
                architecture="x")
    with pytest.raises((InputError, UnknownNameError)):
        cards.write_card(_result(), **{**args, **kwargs})


def test_percent_and_eps_strings():
    assert cards.percent(0.5709) == "57.09" and cards.percent(1) == "100.00"
    assert format_eps(8 / 255) == "8/255" and format_eps(0.5) == "0.5"
    assert cards.display_arch("wrn-28-10-silu") == "WideResNet-28-10"
