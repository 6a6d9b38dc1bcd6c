"""Robust distillation (ard, rslad, gkl_kd): losses and attacks against float64 formulas written
here (SPEC §12), the frozen teacher, the ``teacher:`` config section and loading, a tiny run."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from advtrain import config as C
from advtrain.errors import CheckpointError, InputError, UnknownNameError
from advtrain.config import build_objective
from advtrain.objectives import DISTILLATION
from advtrain.train.teacher import check_teacher, load_teacher

from test_objectives import tiny_cnn
from trainer_helpers import one_thread, tiny_config

NCLS, B = 10, 6


class Linear(nn.Module):
    """logits = flatten(x) @ W: the logit gradient maps to dL/dW = x^T G exactly."""

    def __init__(self, W):
        super().__init__()
        self.W = nn.Parameter(W)

    def forward(self, x):
        return x.flatten(1) @ self.W


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    D = 3 * 2 * 2
    student = Linear(torch.randn(D, NCLS, generator=g, dtype=torch.float64) * 2)
    teacher = Linear(torch.randn(D, NCLS, generator=g, dtype=torch.float64) * 3)
    x = 0.2 + 0.6 * torch.rand(B, 3, 2, 2, generator=g, dtype=torch.float64)
    x_adv = x + 0.03 * (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1)
    y = torch.tensor([0, 3, 3, 7, 9, 1])
    return student, teacher, x, x_adv, y


def log_softmax(s):
    m = s.max(dim=1, keepdim=True).values
    return s - m - torch.log(torch.exp(s - m).sum(dim=1, keepdim=True))


def kl_rows(t, s, tau=1.0):
    """Per-sample KL(softmax(t/tau) || softmax(s/tau)) and the gradient of its batch mean w.r.t. s."""
    lp, lq = log_softmax(t / tau), log_softmax(s / tau)
    p, q = lp.exp(), lq.exp()
    return (p * (lp - lq)).sum(1), (q - p) / (tau * len(s))


def gkl_ref(s, t, u, alpha, beta, tau):
    """Pairwise GKL value (B*C*C terms) and its analytic gradient w.r.t. s."""
    dt = t[:, :, None] - t[:, None, :]
    ds = s[:, :, None] - s[:, None, :]
    w = u[:, :, None] * u[:, None, :]
    Z = (u.sum(1) ** 2).sum()
    wmse = (w * (dt - ds) ** 2).sum() / (4 * Z)
    lp, lq = log_softmax(t / tau), log_softmax(s / tau)
    soft_ce = -(lp.exp() * lq).sum(1).mean()
    e = s - t
    g_wmse = u * (e * u.sum(1, keepdim=True) - (u * e).sum(1, keepdim=True)) / Z
    g_ce = (lq.exp() - lp.exp()) / (tau * len(s))
    return beta * wmse + alpha * soft_ce, beta * g_wmse + alpha * g_ce


def reference(name, opts, s_adv, s_nat, t, y, prior=None):
    """(value, dL/ds_adv, dL/ds_nat) from the papers' formulas."""
    if name == "ard":
        a, tau, k = opts.get("alpha", 1.0), opts.get("loss_T", 30.0), opts.get("kl_scale", 1.0)
        kl, g_kl = kl_rows(t, s_adv, tau)
        lq = log_softmax(s_nat)
        ce = -lq[torch.arange(B), y].mean()
        onehot = torch.eye(NCLS, dtype=t.dtype)[y]
        value = (1 - a) * ce + a * tau ** 2 * k * kl.mean()
        return value, a * tau ** 2 * k * g_kl, (1 - a) * (lq.exp() - onehot) / B
    wa, wn = opts.get("adv_weight", 5 / 6), opts.get("nat_weight", 1 / 6)
    if name == "rslad":
        k = opts.get("kl_scale", 1.0)
        (kla, ga), (kln, gn) = kl_rows(t, s_adv), kl_rows(t, s_nat)
        return k * (wa * kla.mean() + wn * kln.mean()), k * wa * ga, k * wn * gn
    if opts.get("use_prior", True):
        u = prior[y] ** opts.get("gamma", 1.0)
    else:  # per-sample teacher probabilities at prior_T
        u = log_softmax(t / opts.get("prior_T", 1.0)).exp() ** opts.get("gamma", 1.0)
    args = (u, opts.get("alpha", 1.0), opts.get("beta", 1.0), opts.get("loss_T", 1.0))
    (va, ga), (vn, gn) = gkl_ref(s_adv, t, *args), gkl_ref(s_nat, t, *args)
    return wa * va + wn * vn, wa * ga, wn * gn


CASES = [("ard", {}), ("ard", {"alpha": 0.7, "loss_T": 4.0, "kl_scale": 0.5}),
         ("rslad", {}), ("rslad", {"adv_weight": 0.6, "nat_weight": 0.9, "kl_scale": 0.1}),
         ("gkl_kd", {}), ("gkl_kd", {"alpha": 2.0, "beta": 3.0, "gamma": 0.5, "loss_T": 2.0}),
         ("gkl_kd", {"use_prior": False, "prior_T": 3.0, "gamma": 0.7})]


def random_prior(seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(NCLS, NCLS, generator=g, dtype=torch.float64) + 0.05
    return w / w.sum(1, keepdim=True)


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_loss_value_and_gradient_match_the_paper_formula(name, opts):
    student, teacher, x, x_adv, y = setup()
    obj = build_objective(name, dataset="cifar10", num_classes=NCLS, teacher=teacher, **opts).double()
    prior = None
    if name == "gkl_kd":
        prior = random_prior()
        obj.prior.weight.copy_(prior)
    loss, terms = obj.loss(student, x, x_adv, y)
    (grad,) = torch.autograd.grad(loss, student.W)
    with torch.no_grad():
        s_adv, s_nat, t = student(x_adv), student(x), teacher(x)
    value, g_adv, g_nat = reference(name, opts, s_adv, s_nat, t, y, prior)
    expected = x_adv.flatten(1).T @ g_adv + x.flatten(1).T @ g_nat
    assert loss.item() == pytest.approx(value.item(), rel=1e-10)
    assert value.item() > 1e-3  # the comparison is not between two near-zero numbers
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12 * expected.abs().max().item())
    assert torch.equal(terms["loss"], loss.detach())


def attack_grad(name, opts, student, t, x, y, prior):
    """Analytic input gradient of each method's inner-maximisation loss at x' = x."""
    s = student(x).detach()
    if name == "ard":  # the student's own CE
        G = (log_softmax(s).exp() - torch.eye(NCLS, dtype=s.dtype)[y]) / B
    elif name == "rslad":  # KL(T(x) || S(x'))
        G = kl_rows(t, s)[1]
    else:  # the same GKL term as the loss
        u = prior[y] ** opts.get("gamma", 1.0) if opts.get("use_prior", True) else \
            log_softmax(t / opts.get("prior_T", 1.0)).exp() ** opts.get("gamma", 1.0)
        G = gkl_ref(s, t, u, opts.get("alpha", 1.0), opts.get("beta", 1.0), opts.get("loss_T", 1.0))[1]
    return (G @ student.W.detach().T).view_as(x)


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_attack_ascends_the_documented_inner_loss(name, opts):
    student, teacher, x, _, y = setup(seed=2)
    step = 0.01
    obj = build_objective(name, dataset="cifar10", num_classes=NCLS, teacher=teacher, steps=1,
                          step_size=step, eps=0.05, attack_init="none", **opts).double()
    prior = random_prior()
    if name == "gkl_kd":
        obj.prior.weight.copy_(prior)
    x_adv = obj.perturb(student, x, y)
    g = attack_grad(name, opts, student, teacher(x).detach(), x, y, prior)
    clear = g.abs() > 1e-6 * g.abs().max()  # components whose sign cannot flip with rounding
    assert clear.float().mean() > 0.9
    torch.testing.assert_close(x_adv[clear], (x + step * g.sign())[clear], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", DISTILLATION)
def test_teacher_is_frozen_and_runs_once_per_batch(name):
    torch.manual_seed(0)
    teacher, model = tiny_cnn().train(), tiny_cnn()
    teacher[-1].weight.data.mul_(5)
    obj = build_objective(name, dataset="cifar10", num_classes=NCLS, teacher=teacher, steps=2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    obj.train()
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % NCLS
    x_adv = obj.perturb(model, x, y)
    model.train()
    loss, _ = obj.loss(model, x, x_adv, y)
    (loss + obj.awp_loss(model, x, x_adv, y)).backward()
    assert len(calls) == 1, "one teacher forward per batch, shared by attack, loss and AWP"
    assert not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN stats too
    assert any(p.grad is not None for p in model.parameters())
    assert not any(k.startswith("teacher") for k in obj.state_dict())
    assert [id(p) for p in obj.parameters()] == []  # nothing of the teacher reaches the optimiser
    obj.loss(model, x.clone(), x_adv, y)
    assert len(calls) == 2  # a new batch: a new teacher forward
    obj.to(torch.float64)
    assert next(teacher.parameters()).dtype == torch.float64


def test_objective_without_teacher_is_refused():
    with pytest.raises(InputError, match="distils from a teacher; add teacher:"):
        build_objective("rslad", dataset="cifar10", num_classes=NCLS)


def test_gkl_kd_prior_is_the_class_mean_of_teacher_probabilities():
    teacher = tiny_cnn()
    teacher[-1].weight.data.mul_(5)
    obj = build_objective("gkl_kd", dataset="cifar10", num_classes=NCLS, teacher=teacher, prior_T=2.0)
    x, y = torch.rand(8, 3, 16, 16), torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    obj.loss(tiny_cnn().train(), x, x, y)
    obj.awp_loss(tiny_cnn().train(), x, x, y)  # must not count twice
    obj.on_epoch_end()
    with torch.no_grad():
        p = torch.softmax(teacher.eval()(x).double() / 2.0, dim=1)
    for c, rows in ((0, [0, 1]), (1, [2, 3, 4]), (2, [5, 6, 7])):
        mean = p[rows].mean(0)
        torch.testing.assert_close(obj.prior.weight[c].double(), mean / mean.sum(), rtol=1e-5, atol=1e-7)
    assert torch.equal(obj.prior.weight[5], torch.full((NCLS,), 1 / NCLS))  # unseen: stays uniform


# ----------------------------------------------------------------------------- config section

def raw(objective="rslad", teacher=None):
    out = {"objective": {"name": objective}, "model": {"arch": "wrn-10-1"}}
    if teacher is not None:
        out["teacher"] = teacher
    return out


@pytest.mark.parametrize("objective,teacher,error,match", [
    ("rslad", None, InputError, "distils from a teacher"),
    ("trades", {"checkpoint": "t.pt"}, InputError, "only used by the distillation objectives"),
    ("ard", {"checkpoint": "t.pt", "robustbench": "X"}, InputError, "exactly one of"),
    ("ard", {"model_dir": "checkpoints"}, InputError, "exactly one of"),
    ("gkl_kd", {"robustbench": "X", "arch": "wrn-10-1"}, UnknownNameError, "teacher.arch"),
    ("gkl_kd", {"robustbench": "X", "threat_model": "Linfinity"}, UnknownNameError, "Linf"),
    ("rslad", {"checkpoint": 3}, InputError, "teacher.checkpoint"),
    ("rslad", "model.pt", InputError, "mapping"),
])
def test_teacher_section_mistakes_are_one_line_errors(objective, teacher, error, match):
    with pytest.raises(error, match=match) as info:
        C.from_dict(raw(objective, teacher))
    assert "\n" not in str(info.value)


def test_teacher_section_defaults_are_filled_and_round_trip():
    cfg = C.from_dict(raw("rslad", {"robustbench": "Cui2023Decoupled_WRN-34-10"}))
    assert cfg.teacher == {"robustbench": "Cui2023Decoupled_WRN-34-10", "model_dir": "checkpoints",
                           "threat_model": "Linf"}
    assert C.resolve(C.from_dict(C.resolve(cfg)))["teacher"] == cfg.teacher


# ----------------------------------------------------------------------------- loading

def test_checkpoint_teacher_loads_strictly_frozen(tmp_path):
    from advtrain.models import create_model

    model = create_model("wrn-10-1", dataset="cifar10")
    path = str(tmp_path / "teacher.pt")
    torch.save(model.state_dict(), path)
    teacher = load_teacher({"checkpoint": path, "arch": "wrn-10-1"}, "cifar10")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(teacher(x), model.eval()(x))
    with pytest.raises(InputError, match="set teacher.arch"):
        load_teacher({"checkpoint": path, "arch": None}, "cifar10")
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher({"checkpoint": str(tmp_path / "missing.pt"), "arch": "wrn-10-1"}, "cifar10")


def test_robustbench_teacher_from_an_export_and_missing_file(tmp_path):
    from advtrain.hub.export import to_robustbench
    from advtrain.models import create_model

    model = create_model("wrn-10-1", dataset="cifar10").eval()
    model.arch_name = "wrn-10-1"
    to_robustbench(model, "Test2026Distill_WRN-10-1", "cifar10", model_dir=tmp_path)
    section = {"robustbench": "Test2026Distill_WRN-10-1", "model_dir": str(tmp_path),
               "threat_model": "Linf"}
    teacher = load_teacher(section, "cifar10")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(teacher(x), model(x))
    missing = {"robustbench": "Cui2023Decoupled_WRN-34-10", "model_dir": str(tmp_path / "none"),
               "threat_model": "Linf"}
    with pytest.raises(CheckpointError, match="Cui2023Decoupled_WRN-34-10.pt not found") as info:
        load_teacher(missing, "cifar10")  # never downloads
    assert str(tmp_path / "none") in str(info.value)
    assert not (tmp_path / "none").exists()
    with pytest.raises(UnknownNameError, match="RobustBench cifar10/Linf model"):
        load_teacher({**missing, "robustbench": "Nobody2020Nothing"}, "cifar10")


class Constant(nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out.expand(len(x), -1)


@pytest.mark.parametrize("out,match", [
    (torch.zeros(1, 100), "100"),
    (torch.full((1, NCLS), 1 / NCLS), "probabilities"),
    (torch.arange(NCLS, dtype=torch.float32)[None], "chance"),
])
def test_teacher_that_does_not_fit_the_dataset_is_refused(out, match):
    test = (torch.rand(200, 3, 32, 32), torch.arange(200) % NCLS)
    with pytest.raises(InputError, match=match):
        check_teacher(Constant(out), NCLS, "t", test)


# ----------------------------------------------------------------------------- a run

def test_cli_style_run_distils_from_a_checkpoint_teacher(tmp_path):
    from advtrain.models import create_model
    from advtrain.train.loop import fit

    teacher_path = str(tmp_path / "teacher.pt")
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), teacher_path)
    cfg = tiny_config(tmp_path, objective={"name": "gkl_kd"}, optim={"epochs": 1},
                      teacher={"checkpoint": teacher_path, "arch": "wrn-10-1"})
    with one_thread():
        run_dir = fit(cfg)
    state = torch.load(os.path.join(run_dir, "last.pt"), weights_only=True)
    assert set(state["objective"]) == {"prior.weight", "prior.accum", "prior.counts"}
    assert state["config"]["teacher"]["checkpoint"] == teacher_path


@pytest.mark.parametrize("teacher,needle", [
    ({"robustbench": "Cui2023Decoupled_WRN-34-10", "model_dir": "MISSING"},
     "teacher checkpoint MISSING/cifar10/Linf/Cui2023Decoupled_WRN-34-10.pt not found"),
    ({"checkpoint": "WRONG", "arch": "wrn-10-1"}, "c100.pt: does not fit wrn-10-1"),  # a CIFAR-100 model
])
def test_cli_refuses_a_missing_or_unfit_teacher_in_one_line(tmp_path, teacher, needle):
    import contextlib
    import io

    import yaml

    from advtrain.cli import main
    from advtrain.models import create_model

    wrong = tmp_path / "c100.pt"
    torch.save(create_model("wrn-10-1", dataset="cifar100").state_dict(), wrong)
    teacher = {k: str(tmp_path / v) if v in ("MISSING",) else str(wrong) if v == "WRONG" else v
               for k, v in teacher.items()}
    cfg = tiny_config(tmp_path, objective={"name": "rslad"}, teacher=teacher)
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), one_thread():
        rc = main(["train", str(path)])
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("advtrain ")]
    assert rc == 2 and "Traceback" not in err.getvalue()
    assert len(lines) == 1 and needle.replace("MISSING", str(tmp_path / "MISSING")) in lines[0], lines
    assert not (tmp_path / "runs").exists()
