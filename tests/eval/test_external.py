"""Issue 24.3: a card records an external/adaptive evaluation the way RobustBench's cards do
(``external`` = the lower of AutoAttack's and the external accuracy, a footnote naming the attack),
``--version rand`` runs APGD with EOT, and the sanity report suggests an adaptive evaluation."""
from __future__ import annotations

import json

import pytest

from advtrain.errors import InputError
from advtrain.eval import cards
from advtrain.eval.sanity import flag, suggest_adaptive


def _result(robust, n_ex=10000, flags=()):
    from advtrain.eval.settings import EvalResult, EvalSettings

    return EvalResult(settings=EvalSettings(), clean_acc=0.9324, robust_acc=robust,
                      per_attack={"clean": 0.9324, "apgd-ce": robust},
                      attacks=["apgd-ce", "apgd-t", "fab-t", "square"], n_ex=n_ex, device="cpu",
                      flags=list(flags))


def _info(**external):
    return cards.CardInfo(name="M", dataset="cifar10", threat_model="Linf", architecture="A",
                          external=cards.ExternalEval(**external) if external else None)


def test_external_below_autoattack_is_the_best_known(tmp_path):
    """RobustBench's MeanSparse card: AutoAttack 72.08, APGD+BPDA 68.94 -> external 68.94."""
    card, side = cards.write_card(_result(0.7208), _info(attack="APGD + BPDA", accuracy="68.94",
                                                         source="https://example.org/paper"),
                                  out_dir=tmp_path)
    data = json.loads(card.read_text())
    keys = list(data)
    assert keys.index("autoattack_acc") + 1 == keys.index("external")  # RobustBench's order
    assert data["autoattack_acc"] == "72.08" and data["external"] == "68.94"
    assert data["footnote"] == ("68.94% robust accuracy is due to APGD + BPDA "
                                "(https://example.org/paper).")
    assert json.loads(side.read_text())["external"] == {
        "attack": "APGD + BPDA", "accuracy": "68.94", "source": "https://example.org/paper"}
    from robustbench.utils import ModelInfo  # RobustBench reads external beside ModelInfo's fields

    ModelInfo(**{k: v for k, v in data.items() if k not in ("unreliable", "external")})


def test_external_above_autoattack_keeps_autoattack():
    data = cards.card_fields(_result(0.5720), _info(attack="PGD-100", accuracy="60", source="x"))
    assert data["external"] == "57.20" and "PGD-100 (x) gives 60.00%" in data["footnote"]


def test_no_external_no_field():
    assert "external" not in cards.card_fields(_result(0.5), _info())


@pytest.mark.parametrize("kw, needle", [
    (dict(attack="A", accuracy="101", source="s"), "percentage in [0, 100]"),
    (dict(attack="A", accuracy="abc", source="s"), "percentage in [0, 100]"),
    (dict(attack="", accuracy="5", source="s"), "external attack"),
    (dict(attack="A", accuracy="5", source="two\nlines"), "external source")])
def test_external_bad_values_one_line(kw, needle):
    with pytest.raises(InputError) as e:
        cards.ExternalEval(**kw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cli_external_needs_all_three(capsys):
    from advtrain.cli import main

    rc = main(["eval", "x.pt", "--dataset", "cifar10", "--external-attack", "BPDA"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing --external-acc, --external-source" in err
    assert len(err.strip().splitlines()) == 1


def test_rand_version_runs_apgd_with_eot():
    """AutoAttack's rand version (for randomised defenses): APGD-CE and APGD-DLR, 20 EOT draws."""
    import torch

    from advtrain.eval.settings import EvalSettings
    from attacks import AutoAttackAdapter

    s = EvalSettings(version="rand")
    adversary = AutoAttackAdapter(**s.adapter_kwargs()).adversary(torch.nn.Linear(3, 2))
    assert list(adversary.attacks_to_run) == ["apgd-ce", "apgd-dlr"]
    assert adversary.apgd.eot_iter == 20 and not s.standard
    card = cards.card_fields(
        _result(0.5).__class__(settings=s, clean_acc=0.9, robust_acc=0.5, per_attack={},
                               attacks=["apgd-ce", "apgd-dlr"], n_ex=10000, device="cpu"), _info())
    assert "AutoAttack rand (apgd-ce, apgd-dlr)" in card["footnote"] and "reported" not in card


def test_sanity_suggests_an_adaptive_evaluation(tmp_path):
    assert suggest_adaptive([flag("partial-classes", "m")]) is None
    advice = suggest_adaptive([flag("randomized-model", "m"), flag("pgd-not-converged", "m")])
    assert "--version rand" in advice and "--external-attack" in advice
    assert advice.startswith("randomized-model, pgd-not-converged:")
    assert "--version rand" not in suggest_adaptive([flag("square-beats-whitebox", "m")])
    _, side = cards.write_card(_result(0.5, flags=[flag("pgd-not-converged", "m")]), _info(),
                               out_dir=tmp_path)
    assert "adaptive attack" in json.loads(side.read_text())["adaptive_suggestion"]


def test_cli_writes_external(tmp_path, capsys):
    import numpy as np
    import torch

    from advtrain.cli import main
    from advtrain.models import create_model

    torch.manual_seed(0)
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), tmp_path / "m.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", image=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             label=np.arange(8) % 10)
    rc = main(["eval", str(tmp_path / "m.pt"), "--arch", "wrn-10-1", "--dataset", "cifar10",
               "--data-npz", str(tmp_path / "t.npz"), "--n-ex", "8", "--version", "custom",
               "--attacks", "apgd-ce", "--n-iter", "2", "--no-sanity", "--quiet",
               "--out", str(tmp_path / "mi"), "--name", "E", "--external-attack", "APGD + BPDA",
               "--external-acc", "0", "--external-source", "https://example.org/x"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "mi" / "cifar10" / "Linf" / "E.json").read_text())
    assert data["external"] == "0.00"
    assert data["footnote"].endswith("0.00% robust accuracy is due to APGD + BPDA "
                                     "(https://example.org/x).") or float(data["autoattack_acc"]) == 0


def test_rand_evaluation_of_a_randomised_model_runs_and_suggests_adaptive(tmp_path):
    """A noise-injecting model: the sanity report flags it, AutoAttack's rand version (EOT) runs
    end to end, the card says what ran, and the sidecar suggests an adaptive evaluation."""
    import torch
    from torch import nn

    import advtrain

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 4 * 4, 10)

        def forward(self, x):
            return self.fc(x.flatten(1) + 0.05 * torch.randn_like(x.flatten(1)))

    torch.manual_seed(0)
    model = Noisy().eval()
    x = torch.rand(8, 3, 4, 4)
    y = torch.arange(8) % 10
    res = advtrain.evaluate(model, x, y, version="rand", n_iter=2, sanity_n=8, sanity_steps=1,
                            batch_size=8, progress=False)
    assert res.attacks == ["apgd-ce", "apgd-dlr"]
    assert "randomized-model" in [f["code"] for f in res.flags]
    card, side = cards.write_card(res, _info(), out_dir=tmp_path)
    data, meta = json.loads(card.read_text()), json.loads(side.read_text())
    assert "AutoAttack rand (apgd-ce, apgd-dlr), n_iter 2" in data["footnote"]
    assert data["unreliable"] is True and "--version rand" in meta["adaptive_suggestion"]


def test_external_command_adds_to_an_existing_card(tmp_path, capsys):
    """``advtrain external CARD``: RobustBench's fields added without re-running AutoAttack; the
    numbers already on the card are untouched; a second one is refused in one line."""
    from advtrain.cli import main

    card, side = cards.write_card(_result(0.7208), _info(), out_dir=tmp_path)
    before = json.loads(card.read_text())
    assert main(["external", str(card), "--attack", "APGD + BPDA", "--acc", "68.94",
                 "--source", "https://example.org/p"]) == 0
    data, meta = json.loads(card.read_text()), json.loads(side.read_text())
    keys = list(data)
    assert keys.index("autoattack_acc") + 1 == keys.index("external")
    assert keys.index("footnote") < keys.index("unreliable")
    assert data["external"] == "68.94" and data["autoattack_acc"] == before["autoattack_acc"]
    assert data["footnote"] == "68.94% robust accuracy is due to APGD + BPDA (https://example.org/p)."
    assert {k: v for k, v in data.items() if k not in ("external", "footnote")} == before
    assert meta["external"]["accuracy"] == "68.94" and "external" in meta["external_added"]["command"]
    capsys.readouterr()
    assert main(["external", str(card), "--attack", "X", "--acc", "1", "--source", "s"]) == 2
    err = capsys.readouterr().err
    assert "already records an external evaluation" in err and len(err.strip().splitlines()) == 1


def test_external_command_on_a_published_card_and_bad_cards(tmp_path, capsys):
    from advtrain.cli import main

    published = tmp_path / "Gowal.json"  # RobustBench's own card: no sidecar, a footnote already
    published.write_text(json.dumps({"name": "G", "dataset": "cifar10", "eps": "8/255",
                                     "clean_acc": "85.29", "autoattack_acc": "57.20",
                                     "footnote": "Uses extra data.", "unreliable": False}))
    assert main(["external", str(published), "--attack", "AA + MultiTargeted", "--acc", "57.14",
                 "--source", "arXiv"]) == 0
    data = json.loads(published.read_text())
    assert data["external"] == "57.14" and data["footnote"] == (
        "Uses extra data. 57.14% robust accuracy is due to AA + MultiTargeted (arXiv).")
    corr = tmp_path / "C.json"
    corr.write_text(json.dumps({"clean_acc": "90.00", "corruptions_acc": "80.00"}))
    capsys.readouterr()
    assert main(["external", str(corr), "--attack", "A", "--acc", "1", "--source", "s"]) == 2
    assert "not a corruptions card" in capsys.readouterr().err
    bad = tmp_path / "B.json"
    bad.write_text("[1, 2]")
    assert main(["external", str(bad), "--attack", "A", "--acc", "1", "--source", "s"]) == 2
    assert "not a card object" in capsys.readouterr().err


def test_external_reads_a_card_it_was_sent_as_untrusted(tmp_path, capsys):
    """A FIFO named as CARD is one line at once, and a card over the size limit is refused before
    it is read (through the one JSON reader of io.safeload, as the report reads cards)."""
    import os

    from advtrain.cli import main
    from advtrain.eval.cards import MAX_CARD_BYTES

    fifo = tmp_path / "F.json"
    os.mkfifo(fifo)
    assert main(["external", str(fifo), "--attack", "A", "--acc", "1", "--source", "s"]) == 2
    err = capsys.readouterr().err
    assert str(fifo) in err and len(err.strip().splitlines()) == 1
    big = tmp_path / "G.json"
    big.write_text(" " * (MAX_CARD_BYTES + 1) + "{}")
    assert main(["external", str(big), "--attack", "A", "--acc", "1", "--source", "s"]) == 2
    assert f"more than a card may ({MAX_CARD_BYTES})" in capsys.readouterr().err
