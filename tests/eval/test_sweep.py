"""``--eps-sweep``: PGD accuracy against eps, the convergence curve, files and sidecar record."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from advtrain.cli import main
from advtrain.errors import InputError
from advtrain.eval.sweep import parse_eps_list, pgd_curve, run_sweep


class Linear(nn.Module):
    """logits = W x (flattened): the worst-case Linf perturbation is known in closed form."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return x.flatten(1) @ self.w.t()


def test_parse_eps_list_sorted_unique_and_one_parser():
    got = parse_eps_list(" 8/255, 0 ,2/255,8/255,0.5")
    assert got == [0.0, 2 / 255, 8 / 255, 0.5]
    for bad in ("", " , ", "0,abc", "0,2"):
        with pytest.raises(InputError):
            parse_eps_list(bad)


def _binary_problem(n=16, d=12, seed=0):
    """Two classes, logit gap g_i = (w1-w0).x_i; Linf eps flips x_i exactly when eps*|w1-w0|_1 >
    margin (inputs kept away from [0,1]'s edges so clipping never binds)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(2, d, generator=gen, dtype=torch.float64)
    x = 0.3 + 0.4 * torch.rand(n, d, generator=gen, dtype=torch.float64)
    y = (x @ w.t()).argmax(1)
    return Linear(w.float()), x.float().view(n, 1, 1, d), y, w, x


def test_pgd_curve_matches_closed_form_linear_model():
    model, x, y, w, x64 = _binary_problem()
    diff = (w[1] - w[0])
    margin = (x64 @ diff).abs()
    l1 = diff.abs().sum()
    for eps in (0.0, 0.01, 0.05, 0.2):  # eps * l1 < 0.3: the optimum stays inside [0, 1]
        expected = float((margin > eps * l1).double().mean())
        if eps > 0 and (margin - eps * l1).abs().min() < 1e-3:
            continue  # a margin at the boundary would hinge on float rounding
        acc, curves = pgd_curve(model, x, y, eps, norm="Linf", steps=10, restarts=2,
                                batch_size=5, seed=0, device="cpu")
        assert acc == pytest.approx(expected)
        assert len(curves) == (2 if eps > 0 else 0)


def test_pgd_curve_l2_matches_closed_form_linear_model():
    """L2: the worst case moves x along -(w_y - w_other) by eps, the gap falls by eps*|diff|_2."""
    model, x, y, w, x64 = _binary_problem(seed=3)
    diff = w[1] - w[0]
    margin = (x64 @ diff).abs()
    l2 = diff.norm()
    for eps in (0.05, 0.2, 0.5):
        assert eps * float(diff.abs().max() / l2) < 0.3  # the optimum stays inside [0, 1]^d
        if (margin - eps * l2).abs().min() < 1e-3:
            continue
        expected = float((margin > eps * l2).double().mean())
        acc, _ = pgd_curve(model, x, y, eps, norm="L2", steps=10, restarts=1, batch_size=16,
                           seed=0, device="cpu")
        assert acc == pytest.approx(expected)


def test_convergence_curve_is_mean_ce_and_climbs():
    model, x, y, w, x64 = _binary_problem()
    acc, curves = pgd_curve(model, x, y, 0.05, norm="Linf", steps=5, restarts=1, batch_size=16,
                            seed=0, device="cpu")
    # the last iterate of sign-gradient ascent on a linear model is x + eps*sign(diff) per class
    sign = torch.where(y == 0, 1.0, -1.0).double().view(-1, 1)
    x_opt = x64 + 0.05 * sign * (w[1] - w[0]).sign()
    ce = torch.nn.functional.cross_entropy(x_opt @ w.t(), y)
    assert curves[0][-1] == pytest.approx(float(ce), rel=1e-4)
    assert curves[0][-1] > curves[0][0]


def test_run_sweep_adds_headline_and_keeps_autoattack():
    model, x, y, *_ = _binary_problem()
    lines = []
    sweep = run_sweep(model, x, y, [0.0, 0.05], norm="Linf", headline_eps=0.03,
                      autoattack_acc=0.25, steps=3, restarts=1, batch_size=8, log=lines.append)
    assert [p["eps"] for p in sweep["points"]] == [0.0, 0.03, 0.05]
    assert [p.get("autoattack_acc") for p in sweep["points"]] == [None, 0.25, None]
    assert sweep["convergence"]["eps"] == 0.03
    assert len(sweep["convergence"]["loss_per_iteration"]) == 1
    assert len(lines) == 3 and "ETA" in lines[0]


def test_eval_cli_writes_sweep_files_and_sidecar(tmp_path):
    from advtrain.models import create_model

    torch.manual_seed(0)
    model = create_model("wrn-10-1", dataset="cifar10").eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "test.npz", image=images, label=np.arange(8) % 10)
    torch.save({"model": model.state_dict(), "arch": "wrn-10-1", "dataset": "cifar10",
                "num_classes": 10}, tmp_path / "tiny.pt")
    out = tmp_path / "cards"
    rc = main(["eval", str(tmp_path / "tiny.pt"), "--dataset", "cifar10", "--data-npz",
               str(tmp_path / "test.npz"), "--n-ex", "8", "--version", "custom", "--attacks",
               "apgd-ce", "--n-iter", "2", "--batch-size", "8", "--no-sanity", "--quiet",
               "--device", "cpu", "--out", str(out), "--name", "Sweep", "--eps-sweep",
               "0,2/255,8/255", "--sweep-steps", "2", "--sweep-restarts", "2"])
    assert rc == 0
    folder = out / "cifar10" / "Linf"
    side = json.loads((folder / "Sweep.advtrain.json").read_text())
    sweep = side["eps_sweep"]
    assert sweep["files"] == {"csv": "Sweep.eps_sweep.csv", "png": "Sweep.eps_sweep.png",
                              "svg": "Sweep.eps_sweep.svg",
                              "convergence_png": "Sweep.convergence.png",
                              "convergence_svg": "Sweep.convergence.svg"}
    assert sweep["autoattack"] == {"version": "custom", "attacks": ["apgd-ce"]}
    assert sweep["masking_check"]["checked"] is False  # 8/255 is the evaluated eps itself
    for name in sweep["files"].values():
        assert (folder / name).stat().st_size > 0
    rows = list(csv.DictReader((folder / "Sweep.eps_sweep.csv").open()))
    assert [r["eps_str"] for r in rows] == ["0", "2/255", "8/255"]
    # eps 0 is clean accuracy, computed here independently
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255
    with torch.no_grad():
        clean = float((model.double()(x).argmax(1).numpy() == np.arange(8) % 10).mean())
    assert float(rows[0]["pgd_acc"]) == pytest.approx(clean)
    assert float(rows[2]["autoattack_acc"]) == pytest.approx(side["robust_acc"])
    assert len(sweep["convergence"]["loss_per_iteration"]) == 2
    assert all(len(c) == 3 and all(math.isfinite(v) for v in c)
               for c in sweep["convergence"]["loss_per_iteration"])
