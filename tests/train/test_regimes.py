"""Every training regime of issue 25 trains from its YAML (configs/*.yaml, shrunk by overrides to a
tiny model and data) and resumes bit-identically after an interruption; APGD-CE training too."""
from __future__ import annotations

import csv
import os

import pytest
import yaml

from advtrain import config as C
from advtrain.train import checkpoint as ck
from advtrain.train.loop import fit
from trainer_helpers import make_npz, one_thread, states_equal

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _threads():
    with one_thread():
        yield


def tiny(folder, config, name):
    """The YAML ``config`` with the model, data and length shrunk (every other value as written)."""
    train, test = make_npz(os.path.join(folder, "data"), n_train=16, n_test=8)
    overrides = [f"run.out_dir={folder}/runs", f"run.name={name}", "run.device=cpu", "run.progress=false",
                 "run.checkpoint_every_steps=0", "model.arch=wrn-10-1", "data.root=null",
                 f"data.train_npz={train}", f"data.test_npz={test}", "data.batch_size=8",
                 "data.test_subset=8", "data.drop_last=false", "data.augment=none", "optim.epochs=2",
                 "eval.test_pgd_steps=1"]
    return C.load(config, overrides)


def apgd_yaml(folder):
    """2-step APGD-CE training (revisiting-at, SPEC 13.4) as a YAML of its own."""
    path = os.path.join(folder, "apgd.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"objective": {"name": "ce", "label_smoothing": 0.1},
                        "attack": {"name": "apgd", "eps": "4/255", "steps": 2, "step_size": "4/255",
                                   "schedule": "fixed", "ramp": False},
                        "optim": {"lr": 0.1, "schedule": "cosine"}}, f)
    return path


REGIMES = ["clean_cifar10.yaml", "fgsm_rs_cifar10.yaml", "n_fgsm_cifar10.yaml", "grad_align_cifar10.yaml",
           "apgd"]


def _final(run_dir):
    return ck.load(os.path.join(run_dir, "last.pt"))


@pytest.mark.parametrize("regime", REGIMES)
def test_regime_trains_from_yaml_and_resumes_bit_identically(tmp_path, capsys, regime):
    path = apgd_yaml(str(tmp_path)) if regime == "apgd" else os.path.join(REPO, "configs", regime)
    ref = fit(tiny(str(tmp_path / "a"), path, "ref"))
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch 2/2")][0]
    assert "clean " in line and "PGD-1 " in line  # the per-epoch test, whatever the regime
    assert ("clean training (attack none)" in line) == (regime == "clean_cifar10.yaml")
    assert ("train adv acc" in line) == (regime != "clean_cifar10.yaml")  # clean: "train acc"
    part = fit(tiny(str(tmp_path / "b"), path, "part"), stop_after=1)
    assert _final(part)["epoch"] == 1
    resumed = fit(None, run_dir=part, resume=True)
    a, b = _final(ref), _final(resumed)
    assert states_equal(a["model"], b["model"])
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(states_equal({"m": oa[i]["momentum_buffer"]}, {"m": ob[i]["momentum_buffer"]}) for i in oa)
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    with open(os.path.join(ref, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and rows[-1]["test_clean"] != "" and rows[-1]["test_pgd"] != ""
    cfg = C.resolve(C.load(os.path.join(ref, "config.yaml")))
    if cfg["guard"]["policy"] != "off":  # the single-step regimes report FGSM next to PGD
        assert rows[-1]["test_fgsm"] != "" and rows[-1]["co"] in ("0", "1")
    if regime == "grad_align_cifar10.yaml":
        # the regulariser is in the loss terms (lambda 0.2 x (1 - cos): about 0.35 here, far from
        # the float noise of a near-zero 1 - cos)
        assert float(rows[-1]["grad_align"]) > 0.01


def test_per_step_schedule_resumes_mid_epoch_bit_identically(tmp_path, monkeypatch):
    """FGSM-RS with the per-batch cyclic lr and momentum (Wong): a crash right after the step
    checkpoint of step 1 of epoch 1 resumes to the weights of an uninterrupted run."""
    import advtrain.train.loop as T

    path = os.path.join(REPO, "configs", "fgsm_rs_cifar10.yaml")

    def cfg(folder, name):
        return C.from_dict({**C.resolve(tiny(folder, path, name)),
                            "run": {**C.resolve(tiny(folder, path, name))["run"], "checkpoint_every_steps": 1}})

    ref = _final(fit(cfg(str(tmp_path / "a"), "ref")))
    original = T.Trainer._save

    def crash_after_mid_save(self, epoch_file):
        original(self, epoch_file)
        if not epoch_file and self.progress.epoch == 0 and self.progress.batch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(T.Trainer, "_save", crash_after_mid_save)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg(str(tmp_path / "b"), "part"))
    monkeypatch.setattr(T.Trainer, "_save", original)
    run_b = os.path.join(str(tmp_path / "b"), "runs", "part")
    mid = _final(run_b)
    assert (mid["epoch"], mid["batch"]) == (0, 1)
    lr_mid = mid["optimizer"]["param_groups"][0]["lr"]
    out = _final(fit(None, run_dir=run_b, resume=True))
    assert states_equal(ref["model"], out["model"])
    assert ref["optimizer"]["param_groups"][0]["momentum"] == out["optimizer"]["param_groups"][0]["momentum"]
    # torch's CyclicLR: step j of E*N = 4 uses lr 0.2 * (1 - |j/2 - 1|): 0 at the saved step 0, then
    # 0.1, 0.2, 0.1 (the last step's lr is what the final optimizer state holds)
    assert lr_mid == 0.0
    assert out["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1, rel=1e-12)
