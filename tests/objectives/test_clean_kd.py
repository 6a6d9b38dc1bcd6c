"""Clean distillation (ikl_kd, gkl_kd_clean, kl_kd; SPEC §2.6): loss and gradient w.r.t. the student
logits against float64 formulas written here from the reference (DKL ``IKL_KD.py`` v1, ``GKL_KD.py``
v2, mdistiller ``KD.py``; the wMSE in its pairwise B x C x C form), the class prior across an epoch
boundary, the KD warm-up factor, no attack, and a tiny run."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from advtrain.config import build_objective

from trainer_helpers import one_thread, tiny_config

NCLS, B = 7, 6


class Logits(nn.Module):
    """A 'model' whose logits are a parameter row per input index: dL/dS is dL/d(logits)."""

    def __init__(self, logits):
        super().__init__()
        self.S = nn.Parameter(logits.clone())

    def forward(self, x):
        return self.S[index(x)]


class Table(nn.Module):
    """A frozen 'teacher' returning fixed logits per input index."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("T", logits.clone())

    def forward(self, x):
        return self.T[index(x)]


def index(x):
    """The sample index an input image encodes (images live in [0, 1]: pixel value index / 16)."""
    return (x[:, 0, 0, 0] * 16).round().long()


def setup(seed=0, n=B):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, NCLS, generator=g, dtype=torch.float64) * 2
    t = torch.randn(n, NCLS, generator=g, dtype=torch.float64) * 3
    x = (torch.arange(n, dtype=torch.float64) / 16).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    y = torch.tensor([0, 3, 3, 6, 2, 1, 0, 5, 4, 2, 6, 1][:n])
    return s, t, x, y


def softmax(z):
    e = torch.exp(z - z.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def reference(name, o, s, t, y, prior, epoch):
    """(L, dL/ds) of the reference formula (float64, pairwise B x C x C wMSE)."""
    n = len(y)
    p_s = softmax(s)
    onehot = torch.eye(NCLS, dtype=s.dtype)[y]
    ce, g_ce = -(torch.log(p_s) * onehot).sum(1).mean(), (p_s - onehot) / n
    if name == "kl_kd":
        T = o.get("loss_T", 4.0)
        pt, qs = softmax(t / T), softmax(s / T)
        kl = (pt * (torch.log(pt) - torch.log(qs))).sum(1).mean()
        cw, kw = o.get("ce_weight", 0.1), o.get("kd_weight", 0.9)
        return cw * ce + kw * T ** 2 * kl, cw * g_ce + kw * T ** 2 * (qs - pt) / (T * n)
    v2 = name == "gkl_kd_clean"
    gi = o.get("use_prior", v2)
    T2 = o.get("prior_T", 1.0 if v2 else 100.0)
    u = prior[y] if gi else softmax(t / T2)
    u = u ** o.get("gamma", 1.0)
    pn = u[:, :, None] * u[:, None, :]  # p_n of dkl_loss
    dt = t[:, :, None] - t[:, None, :]
    ds = s[:, :, None] - s[:, None, :]
    z = pn.sum() if v2 else n  # v2: / p_n.sum(); v1: / B
    wmse = 0.25 * (pn * (dt - ds) ** 2).sum() / z
    g_wmse = -(pn * (dt - ds)).sum(2) / z
    T = o.get("loss_T", 1.0)
    pt, qs = softmax(t / T), softmax(s / T)
    sce = -(pt * torch.log(qs)).sum(1).mean()
    g_sce = (qs - pt) / (T * n)
    a, b = o.get("alpha", 1.0), o.get("beta", 1.0)
    factor = min(epoch / o.get("warmup", 5 if v2 else 1), 1.0)
    cw = o.get("ce_weight", 1.0)
    return (cw * ce + factor * (a * sce + b * wmse),
            cw * g_ce + factor * (a * g_sce + b * g_wmse))


def random_prior(seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(NCLS, NCLS, generator=g, dtype=torch.float64) + 0.05
    return w / w.sum(1, keepdim=True)


CASES = [("ikl_kd", {}),  # v1 cfg defaults: per-sample softmax(t / 100), no ramp
         ("ikl_kd", {"use_prior": True, "prior_T": 1.0, "beta": 0.5}),  # v1 ImageNet R34->R18
         ("ikl_kd", {"alpha": 3.0, "beta": 4.0, "loss_T": 2.0, "ce_weight": 0.7}),
         ("gkl_kd_clean", {}),
         ("gkl_kd_clean", {"gamma": 0.6, "beta": 0.5}),  # v2 ImageNet R34->R18
         ("gkl_kd_clean", {"use_prior": False, "prior_T": 4.0, "gamma": 0.3, "alpha": 2.0}),
         ("gkl_kd_clean", {"gamma": 0.0, "loss_T": 4.0, "warmup": 3}),
         ("kl_kd", {}), ("kl_kd", {"loss_T": 1.0, "ce_weight": 0.5, "kd_weight": 0.5})]


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_loss_and_student_logit_gradient_match_the_reference(name, opts):
    s, t, x, y = setup()
    student = Logits(s)
    obj = build_objective(name, dataset="cifar10", num_classes=NCLS, teacher=Table(t), **opts).double()
    prior = random_prior()
    if hasattr(obj, "prior"):
        obj.prior.weight.copy_(prior)
        obj.epoch.fill_(2)
    epoch = 2
    x_adv = obj.perturb(student, x, y)
    assert torch.equal(x_adv, x)  # the training attack none
    loss, terms = obj.loss(student, x, x_adv, y)
    (grad,) = torch.autograd.grad(loss, student.S)
    value, expected = reference(name, opts, s, t, y, prior, epoch)
    assert value.item() > 0.1  # not a comparison of two near-zero numbers
    assert loss.item() == pytest.approx(value.item(), rel=1e-10)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12 * expected.abs().max().item())
    assert torch.equal(terms["loss"], loss.detach())


def test_prior_across_an_epoch_boundary_is_the_class_mean_of_teacher_softmax():
    """Epoch 1 uses the uniform prior; epoch 2 the class mean of softmax(t / T2) over epoch 1's
    batches (after the step, AWP's proxy loss not counted); within epoch 2 the prior stays fixed."""
    s, t, x, y = setup(n=12)
    opts = {"gamma": 0.5, "prior_T": 2.0, "warmup": 1}
    obj = build_objective("gkl_kd_clean", dataset="cifar10", num_classes=NCLS, teacher=Table(t),
                          **opts).double()
    student = Logits(s)
    uniform = torch.full((NCLS, NCLS), 1 / NCLS, dtype=torch.float64)
    halves = (slice(0, 6), slice(6, 12))
    for h in halves:  # epoch 1: two batches
        xb, yb = x[h].clone(), y[h]
        loss, _ = obj.loss(student, xb, xb, yb)
        obj.awp_loss(student, xb, xb, yb)  # must not accumulate
        ref = reference("gkl_kd_clean", opts, s[h], t[h], yb, uniform, 1)[0]
        assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    obj.on_epoch_end()
    p = softmax(t / 2.0)
    prior = uniform.clone()  # classes absent from the epoch keep their row (reference: NaN)
    for c in y.unique():
        m = p[y == c].mean(0)
        prior[c] = m / m.sum()
    assert 0 < (prior - uniform).abs().max() > 1e-3  # the boundary changes the weights
    torch.testing.assert_close(obj.prior.weight, prior, rtol=1e-12, atol=1e-14)
    for h in halves:  # epoch 2: the new prior, unchanged by epoch 2's own batches
        xb, yb = x[h].clone(), y[h]
        loss, _ = obj.loss(student, xb, xb, yb)
        ref = reference("gkl_kd_clean", opts, s[h], t[h], yb, prior, 2)[0]
        assert loss.item() == pytest.approx(ref.item(), rel=1e-10)


@pytest.mark.parametrize("name,warmup", [("gkl_kd_clean", 5), ("ikl_kd", 1), ("ikl_kd", 3)])
def test_kd_warm_up_factor_follows_the_epoch(name, warmup):
    s, t, x, y = setup()
    obj = build_objective(name, dataset="cifar10", num_classes=NCLS, teacher=Table(t), warmup=warmup,
                          use_prior=False).double()
    student = Logits(s)
    for epoch in range(1, 8):
        loss, terms = obj.loss(student, x, x, y, update_state=False)
        factor = min(epoch / warmup, 1.0)
        assert terms["kd_factor"].item() == pytest.approx(factor, rel=1e-6)  # a float32 log term
        assert loss.item() == pytest.approx(reference(name, {"warmup": warmup, "use_prior": False},
                                                      s, t, y, None, epoch)[0].item(), rel=1e-10)
        obj.on_epoch_end()
    assert int(obj.state_dict()["epoch"]) == 8  # resumes with the objective's state


def test_v1_equals_v2_for_gamma_one_and_differs_below():
    """Prior rows sum to 1, so for gamma = 1 the pair-weight total is B (v1 == v2); gamma < 1 not."""
    s, t, x, y = setup()
    kw = dict(dataset="cifar10", num_classes=NCLS, teacher=Table(t), use_prior=True, prior_T=1.0,
              warmup=1)
    v1 = build_objective("ikl_kd", **kw).double()
    v2 = build_objective("gkl_kd_clean", **kw).double()
    v2g = build_objective("gkl_kd_clean", gamma=0.5, **kw).double()
    g = torch.Generator().manual_seed(3)
    peaked = softmax(4 * torch.randn(NCLS, NCLS, generator=g, dtype=torch.float64))
    for o in (v1, v2, v2g):
        o.prior.weight.copy_(peaked)  # gamma < 1 flattens peaked weights: another weighted mean
    student = Logits(s)
    (l1, w1), (l2, w2), (_, w3) = ((r[0].item(), r[1]["wmse"].item())
                                   for r in (o.loss(student, x, x, y) for o in (v1, v2, v2g)))
    assert l1 == pytest.approx(l2, rel=1e-12) and w1 == pytest.approx(w2, rel=1e-12)
    assert abs(w3 - w1) > 0.05 * w1  # gamma 0.5: the pair-weight total exceeds B


def test_trains_one_epoch_without_an_attack_from_a_checkpoint_teacher(tmp_path):
    from advtrain.models import create_model
    from advtrain.train.loop import fit

    teacher_path = str(tmp_path / "teacher.pt")
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), teacher_path)
    cfg = tiny_config(tmp_path, objective={"name": "ikl_kd", "use_prior": True}, optim={"epochs": 1},
                      attack={"steps": 0}, eval={"test_pgd_steps": 0},
                      teacher={"checkpoint": teacher_path, "arch": "wrn-10-1"})
    with one_thread():
        run_dir = fit(cfg)
    state = torch.load(os.path.join(run_dir, "last.pt"), weights_only=True)
    assert int(state["objective"]["epoch"]) == 2
    assert not torch.equal(state["objective"]["prior.weight"], torch.full((10, 10), 0.1))
    assert state["config"]["attack"]["name"] == "none" and state["config"]["attack"]["steps"] == 0


def test_bf16_student_logits_are_scored_in_float32():
    """Under bf16 autocast the student's logits arrive in bf16; the KD terms are computed from them
    in float32 (emulated on CPU by a bf16 model)."""
    s, t, x, y = setup()
    student = Logits(s.to(torch.bfloat16))
    obj = build_objective("gkl_kd_clean", dataset="cifar10", num_classes=NCLS,
                          teacher=Table(t.float()), gamma=0.5, warmup=1)
    obj.prior.weight.copy_(random_prior().float())
    loss, _ = obj.loss(student, x.float(), x.float(), y)
    assert loss.dtype == torch.float32
    s32 = student.S.detach().double()  # the bf16 values, exactly
    value = reference("gkl_kd_clean", {"gamma": 0.5, "warmup": 1}, s32, t.float().double(), y,
                      random_prior().float().double(), 1)[0]
    assert loss.item() == pytest.approx(value.item(), rel=1e-5)


def test_resumed_run_keeps_the_warm_up_epoch_and_the_prior(tmp_path):
    """An interrupted gkl_kd_clean run (warm-up 5: the KD factor changes every epoch, prior per epoch)
    resumed from epoch 1 ends bit-identical to the uninterrupted run."""
    from advtrain.models import create_model
    from advtrain.train.loop import fit

    teacher_path = str(tmp_path / "teacher.pt")
    torch.save(create_model("wrn-10-1", dataset="cifar10").state_dict(), teacher_path)

    def cfg(folder):
        return tiny_config(folder, objective={"name": "gkl_kd_clean", "gamma": 0.5}, optim={"epochs": 2},
                           eval={"test_pgd_steps": 0}, teacher={"checkpoint": teacher_path, "arch": "wrn-10-1"})

    with one_thread():
        whole = fit(cfg(tmp_path / "a"))
        part = fit(cfg(tmp_path / "b"), stop_after=1)
        resumed = fit(None, run_dir=part, resume=True)
    a, b = (torch.load(os.path.join(d, "last.pt"), weights_only=True) for d in (whole, resumed))
    assert int(b["objective"]["epoch"]) == 3
    for key in ("model", "objective"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert [r["kd_factor"] for r in a["history"]] == pytest.approx([0.2, 0.4], rel=1e-6)


def test_another_training_attack_runs_on_the_students_ce():
    """attack.name pgd with a clean KD objective: a real PGD on the student's CE, inside the ball."""
    from advtrain import config as C
    from advtrain.train.setup import make_objective

    cfg = C.from_dict({"objective": {"name": "ikl_kd"}, "model": {"arch": "wrn-10-1"},
                       "attack": {"name": "pgd", "schedule": "fixed", "steps": 2, "step_size": "2/255",
                                  "init": "uniform"},
                       "teacher": {"checkpoint": "unused.pt", "arch": "wrn-10-1"}})
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, NCLS))
    obj = make_objective(cfg, NCLS, teacher=nn.Sequential(nn.Flatten(), nn.Linear(12, NCLS)))
    obj.set_attack_budget(8 / 255, 2 / 255, 2)
    x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    x_adv = obj.perturb(net, x, y)
    assert type(obj.attack).__name__ == "PGD" and obj.attack.loss == "ce"
    assert 0 < (x_adv - x).abs().max() <= 8 / 255 + 1e-6
