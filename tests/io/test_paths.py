"""``advtrain.io.paths.check_outputs``: every path one command writes, checked together (issue 23)."""
from __future__ import annotations

import os

import pytest

from advtrain.errors import InputError
from advtrain.eval.cards import CARD_SUFFIXES, card_files
from advtrain.eval.sweep import SWEEP_SUFFIXES, sweep_paths
from advtrain.hub.zoo import EXPORT_SUFFIXES, meta_path, zoo_path
from advtrain.io.paths import check_outputs

CARD_FAMILY = CARD_SUFFIXES + SWEEP_SUFFIXES


def _card_outputs(out, name, **extra):
    card, side = card_files(out, "cifar10", "Linf", name)
    csv, png, svg, conv, conv_svg = sweep_paths(card.with_suffix(""))
    return {"card": card, "sidecar": side, "csv": csv, "png": png, "svg": svg, "conv": conv,
            "conv_svg": conv_svg, **extra}


def test_one_name_passes(tmp_path):
    check_outputs(_card_outputs(tmp_path, "Me", **{"--save-adv": tmp_path / "adv.pt"}), {},
                  family=("Me", CARD_FAMILY))
    check_outputs(_card_outputs(tmp_path, "X.eps_sweep"), {}, family=("X.eps_sweep", CARD_FAMILY))


def test_card_of_one_name_is_sidecar_of_another(tmp_path):
    """``Me.advtrain``'s card is ``Me``'s sidecar: the same file, for two different names."""
    card_other, _ = card_files(tmp_path, "cifar10", "Linf", "Me.advtrain")
    assert card_other == card_files(tmp_path, "cifar10", "Linf", "Me")[1]  # the premise
    with pytest.raises(InputError, match="file of the output named 'Me'") as e:
        check_outputs(_card_outputs(tmp_path, "Me.advtrain"), {}, family=("Me.advtrain", CARD_FAMILY))
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("kind", ["csv", "png", "conv", "sidecar"])
def test_extra_output_on_a_file_of_the_same_run(tmp_path, kind):
    outs = _card_outputs(tmp_path, "Me")
    outs["--state-path"] = outs[kind]
    with pytest.raises(InputError, match="is the same file as"):
        check_outputs(outs, {}, family=("Me", CARD_FAMILY))


def test_extra_output_on_another_names_file(tmp_path):
    """``--save-adv`` on ``Other.json`` (another card) in the card folder; elsewhere it is free."""
    outs = _card_outputs(tmp_path, "Me")
    folder = outs["card"].parent
    for other in ("Other.json", "Other.advtrain.json", "Other.eps_sweep.csv"):
        with pytest.raises(InputError, match="of the output named 'Other'"):
            check_outputs({**outs, "--save-adv": folder / other}, {}, family=("Me", CARD_FAMILY))
    check_outputs({**outs, "--save-adv": tmp_path / "Other.json"}, {}, family=("Me", CARD_FAMILY))


def test_linked_folder_is_the_same_folder(tmp_path):
    """A path through a symlinked folder lands in the card folder all the same."""
    outs = _card_outputs(tmp_path, "Me")
    outs["card"].parent.mkdir(parents=True)
    os.symlink(outs["card"].parent.parent, tmp_path / "alias")  # alias -> .../cifar10
    with pytest.raises(InputError, match="named 'Other'"):
        check_outputs({**outs, "--save-adv": tmp_path / "alias" / "Linf" / "Other.json"}, {},
                      family=("Me", CARD_FAMILY))


def test_export_family(tmp_path):
    pt, side = (zoo_path(tmp_path, "Me", "cifar10", "Linf"),
                meta_path(tmp_path, "Me", "cifar10", "Linf"))
    check_outputs({"pt": pt, "side": side, "st": pt.with_suffix(".safetensors")}, {},
                  family=("Me", EXPORT_SUFFIXES))
    with pytest.raises(InputError, match="is the same file as CHECKPOINT"):
        check_outputs({"pt": pt}, {"CHECKPOINT": pt}, family=("Me", EXPORT_SUFFIXES))
