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
                        "attack.eps=4/255", "notes=x=y"])
    assert cfg.optim.epochs == 2 and cfg.optim.lr == pytest.approx(5e-3)
    assert cfg.data.synthetic_npz == ["a.npz", "b.npz"]
    assert cfg.attack.eps == pytest.approx(4 / 255)
    assert cfg.notes == "x=y"


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
    ({"precision": "fp8"}, r"choices: bf16, fp16, fp32"),
    ({"run": {"device": "gpu"}}, r"is not supported; advtrain runs on auto, cpu, cuda"),
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


# ----------------------------------------------------------------------------- shipped configs

import glob  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def test_configs_exist():
    names = {os.path.relpath(p, os.path.join(REPO, "configs")) for p in CONFIGS}
    assert {"gkl_at_cifar10.yaml", "gkl_at_cifar100.yaml", "gkl_at_cifar100_autoaug.yaml",
            "ikl_at_cifar10_20m.yaml", "ikl_at_cifar100_50m.yaml", "lbgat6_cifar100.yaml",
            "trades_awp_cifar100.yaml", "gkl_at_cifar10_gamma02_executed.yaml"} <= names
    assert any(n.startswith("cpu/") for n in names)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_config_loads_validates_and_round_trips(path):
    from advtrain.config.paper_rows import PAPER_ROWS

    cfg = C.load(path)
    res = C.resolve(cfg)
    assert C.resolve(C.from_dict(yaml.safe_load(C.dump(cfg)))) == res
    if "/imagenet/" in path:  # ImageNet recipes (issue 18): published anchors, not paper rows
        assert cfg.data.dataset == "imagenet" and cfg.model.arch.startswith("timm:")
    elif "/cpu/" not in path:
        # beyond the paper: distillation (SPEC §12) and the clean / single-step regimes of objective
        # ce (SPEC §13); their rows are in tests/config/test_paper_configs.py
        if cfg.teacher is None and cfg.objective.name != "ce":
            assert cfg.paper_row in PAPER_ROWS, "paper configs name their paper_row"
        assert res["average"]["end"] == cfg.optim.epochs
    else:
        assert cfg.run.device in ("cpu", "auto") and cfg.model.arch in ("wrn-10-1", "wrn-16-2", "cnn-1x16")
    if cfg.data.augment == "autoaugment":  # the loader yields [basic; AutoAug] batches
        assert cfg.objective.two_view is True


def test_paper_recipes_match_spec():
    row1 = C.load(os.path.join(REPO, "configs", "gkl_at_cifar10.yaml"))
    assert (row1.objective.alpha, row1.objective.beta, row1.objective.prior_T) == (3.0, 20.0, 4.0)
    assert (row1.optim.lr, row1.optim.epochs, row1.attack.schedule, row1.awp.warmup) == (0.2, 200, "executed", 10)
    dm = C.load(os.path.join(REPO, "configs", "ikl_at_cifar10_20m.yaml"))
    assert (dm.model.arch, dm.optim.schedule, dm.attack.bn_mode, dm.ema.decay) == (
        "wrn-28-10-silu", "onecycle", "train_frozen", 0.995)
    assert (dm.data.synthetic_fraction, dm.data.holdout, dm.objective.label_smoothing) == (0.7, 1024, 0.1)
    intended = C.load(os.path.join(REPO, "configs", "gkl_at_cifar10_gamma02_intended.yaml"))
    executed = C.load(os.path.join(REPO, "configs", "gkl_at_cifar10_gamma02_executed.yaml"))
    assert (intended.objective.prior_T, executed.objective.prior_T) == (1.0, 4.0)


def test_train_scripts_are_valid_bash_and_name_existing_configs():
    scripts = sorted(glob.glob(os.path.join(REPO, "sh", "train_*.sh")))
    assert len(scripts) >= 10
    for script in scripts:
        subprocess.run(["bash", "-n", script], check=True)
        text = open(script).read()
        for word in text.split():
            if word.startswith("configs/"):
                assert os.path.isfile(os.path.join(REPO, word)), (script, word)


@pytest.mark.parametrize("arch", ["wrn-16-2-silu", "cnn-1x4", "CNN-2x8", "wrn-10-1"])
def test_config_accepts_every_name_the_registry_builds(arch):
    # the config asks the model registry (its one owner of names and parsed patterns)
    from advtrain.models import create_model

    cfg = C.from_dict({"model": {"arch": arch}})
    assert create_model(cfg.model.arch, dataset="cifar10").arch_name == arch.lower()
