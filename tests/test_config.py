"""Config: YAML round trip, dotted overrides, eps parsing, one-line errors for bad input."""
from __future__ import annotations

import pytest
import yaml

from advtrain import config as C
from advtrain.errors import InputError, UnknownNameError


def test_defaults_resolve_and_round_trip(tmp_path):
    cfg = C.from_dict({"optim": {"epochs": 4}})
    res = C.resolve(cfg)
    assert res["attack"]["ramp"] is True and res["average"]["end"] == 4
    path = tmp_path / "c.yaml"
    path.write_text(C.dump(cfg))
    again = C.load(path)
    assert C.resolve(again) == res


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  epochs: 10\nobjective:\n  name: trades\n")
    cfg = C.load(path, ["optim.epochs=2", "optim.lr=5e-3", "data.synthetic_npz=[a.npz, b.npz]",
                        "attack.eps=4/255", "run.name=x=y"])
    assert cfg.optim.epochs == 2 and cfg.optim.lr == pytest.approx(5e-3)
    assert cfg.data.synthetic_npz == ["a.npz", "b.npz"]
    assert cfg.attack.eps == pytest.approx(4 / 255)
    assert cfg.run.name == "x=y"


@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), ("0.0314", 0.0314), (0.5, 0.5),
                                        (1, 1.0), (" 16 / 255 ", 16 / 255), ("0", 0.0)])
def test_parse_eps(text, value):
    assert C.parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["-1/255", "2", 1.5, -0.1, "abc", "1/0", True, None, "nan"])
def test_parse_eps_refuses(bad):
    with pytest.raises(InputError):
        C.parse_eps(bad)


@pytest.mark.parametrize("raw,match", [
    ({"optim": {"lrr": 0.1}}, r"unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
    ({"optimizer": {}}, r"did you mean 'optim'"),
    ({"optim": {"epochs": "two"}}, r"'optim.epochs' must be an integer"),
    ({"optim": {"nesterov": "yes"}}, r"'optim.nesterov' must be true or false"),
    ({"data": {"synthetic_npz": "a.npz"}}, r"must be a list"),
    ({"optim": {"epochs": 0}}, r"'optim.epochs' = 0 must be >= 1"),
    ({"optim": {"lr": -0.1}}, r"'optim.lr' = -0.1 must be > 0"),
    ({"attack": {"eps": -0.1}}, r"attack.eps"),
    ({"attack": {"eps": "9/3"}}, r"outside \[0, 1\]"),
    ({"data": {"synthetic_fraction": 1.2}}, r"synthetic_fraction' = 1.2 must be in \[0, 1\]"),
    ({"attack": {"schedule": "stagd"}}, r"did you mean 'staged'"),
    ({"optim": {"schedule": "cosin"}}, r"did you mean 'cosine'"),
    ({"nan_policy": "ignore"}, r"choices: skip, stop"),
    ({"precision": "fp16"}, r"choices: bf16, fp32"),
    ({"run": {"device": "gpu"}}, r"unknown device"),
    ({"average": {"start": 5, "end": 3}}, r"start <= end"),
    ({"optim": {"milestones": [5, 3]}}, r"increasing"),
    ({"objective": {"name": "trades", "eps": 0.1}}, r"set attack.eps instead"),
    ({"run": "fast"}, r"section 'run' must be a mapping"),
    ({"paper_row": 99}, r"paper_row"),
])
def test_bad_values_are_one_line_errors(raw, match):
    with pytest.raises((InputError, UnknownNameError), match=match) as info:
        C.from_dict(raw)
    assert "\n" not in str(info.value)


def test_device_variants_accepted():
    for dev in ("auto", "cpu", "cuda", "cuda:1"):
        assert C.from_dict({"run": {"device": dev}}).run.device == dev


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        C.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        C.load(bad)
    with pytest.raises(InputError, match="key=value"):
        C.apply_overrides({}, ["optim.epochs"])


def test_dump_is_plain_yaml():
    text = C.dump(C.from_dict({}))
    assert isinstance(yaml.safe_load(text), dict)
