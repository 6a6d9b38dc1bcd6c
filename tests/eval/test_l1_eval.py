"""The L1 threat model in evaluation: ``advtrain eval --norm L1`` runs pyautoattack's standard L1
AutoAttack and writes a RobustBench-format card whose footnote says RobustBench has no L1
leaderboard; its accuracy is the one of an independent pyautoattack run on the same images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advtrain.cli import main
from advtrain.models import create_model

N = 8


def _independent(model, x, y, eps, budget=()):
    """pyautoattack's own standard evaluation (its ``_set_version`` picks the L1 attacks and
    ``use_largereps``); ``budget``: (attack, attribute, value) of its public budget knobs."""
    from pyautoattack import AutoAttack

    adversary = AutoAttack(model, norm="L1", eps=eps, version="standard", seed=0, device="cpu")
    adversary.verbose = False
    assert adversary.apgd.use_largereps and adversary.apgd_targeted.use_largereps
    for attack, key, value in budget:
        setattr(getattr(adversary, attack), key, value)
    with torch.random.fork_rng():
        _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    return (y_adv == y).double().mean().item()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A wrn-10-1 checkpoint whose last layer is scaled up (its predictions vary from image to
    image, so L1 AutoAttack at the default radius breaks them within APGD-CE) and an npz labelled
    with its predictions."""
    tmp = tmp_path_factory.mktemp("l1")
    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="cifar10").eval()
    fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        fc.weight.normal_(0, 30.0)
        fc.bias.zero_()
    images = np.random.default_rng(0).integers(0, 256, size=(N, 32, 32, 3), dtype=np.uint8)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).contiguous()
    with torch.no_grad():
        labels = model(x).argmax(1)
    assert len(set(labels.tolist())) > 1
    np.savez(tmp / "test.npz", image=images, label=labels.numpy())
    torch.save({"model": model.state_dict(), "ema": None, "arch": "wrn-10-1", "dataset": "cifar10",
                "num_classes": 10, "config": {}}, tmp / "tiny.pt")
    return tmp, model, x, labels


def test_eval_norm_l1_writes_a_card_with_the_official_accuracy(setup, capsys):
    tmp, model, x, y = setup
    rc = main(["eval", str(tmp / "tiny.pt"), "--dataset", "cifar10", "--data-npz",
               str(tmp / "test.npz"), "--norm", "L1", "--n-ex", str(N), "--batch-size", str(N),
               "--sanity-n", "4", "--sanity-steps", "1", "--quiet", "--out", str(tmp / "model_info")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "L1 eps 12," in out and "note: eps" not in out  # 12 is no k/255
    card_path = tmp / "model_info" / "cifar10" / "L1" / "tiny.json"
    card = json.loads(card_path.read_text())
    side = json.loads(card_path.with_suffix(".advtrain.json").read_text())
    assert side["threat_model"] == "L1" and side["norm"] == "L1"
    assert card["eps"] == "12"  # the facts row's CIFAR L1 radius, --eps left out
    assert side["version"] == "standard" and side["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert "RobustBench has no L1 leaderboard" in card["footnote"]
    assert "AutoAttack standard" in card["footnote"] and f"on {N} of 10000" in card["footnote"]
    assert card["clean_acc"] == "100.00"
    want = _independent(model, x, y, 12.0)
    assert float(card["autoattack_acc"]) == pytest.approx(100 * want, abs=0.006)


def test_standard_l1_autoattack_equals_pyautoattacks_own_run():
    """A radius where some images survive every attack, so the number is not trivially 0 or 1;
    the budget cut to seconds on both sides (restarts, targets, Square's queries; the L1 version's
    attacks, ``use_largereps`` and iterations unchanged)."""
    import advtrain

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    x = torch.rand(N, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    result = advtrain.evaluate(model, x, y, norm="L1", eps=1.0, version="standard", n_queries=20,
                               n_restarts=1, n_targets=2, sanity=False, batch_size=N, progress=False)
    want = _independent(model, x, y, 1.0, [("square", "n_queries", 20), ("apgd", "n_restarts", 1),
                                           ("apgd_targeted", "n_target_classes", 2),
                                           ("fab", "n_target_classes", 2)])
    assert 0 < want < 1
    assert result.robust_acc == pytest.approx(want, abs=1e-12)
    assert list(result.per_attack) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]


@pytest.mark.parametrize("argv, needle", [
    (["--norm", "l1"], "did you mean 'L1'"),
    (["--norm", "L1", "--eps", "-3"], "is not a finite radius >= 0"),
])
def test_bad_l1_input_is_one_line(setup, capsys, argv, needle):
    tmp = setup[0]
    rc = main(["eval", str(tmp / "tiny.pt"), "--dataset", "cifar10", "--data-npz",
               str(tmp / "test.npz"), "--n-ex", str(N), "--quiet", "--out", str(tmp / "bad"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp / "bad").exists()


def test_the_ball_check_measures_l1_distances():
    """The sanity check of the adversarial examples sums |x_adv − x| for L1 (not the L2 norm)."""
    from advtrain.eval.sanity import verify_ball

    x = torch.full((2, 3, 4, 4), 0.5)
    x_adv = x.clone()
    x_adv[0, 0, 0, :] += 0.25  # L1 1.0, L2 0.5: inside an L1 ball of 1.5
    x_adv[1, :, :, :2] += 0.1  # L1 2.4 (24 pixels), L2 0.49: outside it
    report, flags = verify_ball(x, x_adv, 1.5, "L1")
    assert report["n_outside"] == 1 and report["max_dist"] == pytest.approx(2.4, abs=1e-5)
    assert [f["code"] for f in flags] == ["outside-eps-ball"]
    assert verify_ball(x, x_adv, 2.5, "L1")[0]["n_outside"] == 0


def test_eps_ranges_follow_the_threat_model():
    """An L1 (or L2) radius is a plain number that may exceed 1; a Linf one lies in [0, 1]; a card
    spells 12 as "12", not "3060/255"."""
    from advtrain.errors import InputError
    from advtrain.eval.settings import EvalSettings, eps_note
    from advtrain.utils import format_eps

    assert EvalSettings(norm="L1", eps="12").eps == 12.0 and EvalSettings(norm="L1", eps=75).eps == 75.0
    assert EvalSettings(norm="L2", eps="2").eps == 2.0
    with pytest.raises(InputError, match=r"eps 12 = 12 is outside \[0, 1\]"):
        EvalSettings(norm="Linf", eps=12)
    with pytest.raises(InputError, match="is not a finite radius >= 0"):
        EvalSettings(norm="L1", eps="inf")
    assert [format_eps(e) for e in (12.0, 75.0, 2.0, 0.5, 8 / 255)] == ["12", "75", "2", "0.5", "8/255"]
    assert eps_note(12.0) is None and eps_note(0.031) is not None
