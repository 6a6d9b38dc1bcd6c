"""PGD / FGSM / Attack base: loss ascent, ball and box constraints, mode restore, forward counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advtrain.errors import InputError
from advtrain.losses import DKLAttackLoss
from attacks import FGSM, PGD, Attack, AttackError, ce_loss, cw_loss, kl_loss

EPS = {"Linf": 8 / 255, "L2": 0.5}


def small_net(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Dropout(0.5), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, num_classes))


def linear_net(num_classes: int = 10, dim: int = 3 * 8 * 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, num_classes))


@pytest.fixture
def batch():
    x = torch.rand(16, 3, 8, 8)
    x[0] = 0.0  # corners of the box: projection onto [0,1] must bite
    x[1] = 1.0
    return x, torch.randint(0, 10, (16,))


class ForwardCounter:
    def __init__(self, model):
        self.calls, self.training = 0, []
        model.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.calls += 1
        self.training.append(module.training)


def distance(x_adv, x, norm):
    flat = (x_adv - x).flatten(1)
    return flat.abs().amax(1) if norm == "Linf" else flat.norm(dim=1)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("loss", ["ce", "cw", "kl"])
def test_pgd_raises_loss_and_stays_in_ball_and_box(batch, norm, loss):
    x, y = batch
    model = small_net().eval()
    fn = {"ce": ce_loss, "cw": cw_loss, "kl": kl_loss}[loss]
    x_adv = PGD(eps=EPS[norm], alpha=EPS[norm] / 4, steps=8, norm=norm, loss=loss)(model, x, y)
    with torch.no_grad():
        nat = model(x)
        assert fn(model(x_adv), y, nat) > fn(nat, y, nat) + 1e-6
    assert distance(x_adv, x, norm).max() <= EPS[norm] + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


def test_stronger_eps_never_raises_accuracy():
    model = linear_net().eval()
    x = torch.rand(64, 3, 8, 8)
    y = model(x).argmax(1)  # clean accuracy 100 %
    accs = []
    for eps in (0.0, 2 / 255, 8 / 255, 32 / 255):
        x_adv = PGD(eps=eps, alpha=eps / 4, steps=10, init="none")(model, x, y)
        accs.append((model(x_adv).argmax(1) == y).float().mean().item())
    assert accs[0] == 1.0
    assert all(a >= b for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0]


@pytest.mark.parametrize("init", ["none", "uniform"])
def test_kl_and_callable_losses_compute_natural_logits_once(batch, init):
    x, y = batch
    model = small_net().eval()
    counter = ForwardCounter(model)
    PGD(steps=4, loss="kl", init=init)(model, x, y)
    assert counter.calls == 4 + 1
    seen = []

    def loss_fn(logits_adv, y, logits_nat):
        seen.append(logits_nat)
        return F.cross_entropy(logits_adv, y) + (logits_adv - logits_nat).square().mean()

    counter.calls = 0
    PGD(steps=3, loss=loss_fn, init=init)(model, x, y)
    assert counter.calls == 3 + 1 and len(seen) == 3
    assert all(s is seen[0] for s in seen)
    assert torch.allclose(seen[0], model.eval()(x))

    def no_nat(logits_adv, y, logits_nat):
        assert logits_nat is None
        return F.cross_entropy(logits_adv, y)

    no_nat.needs_nat = False
    counter.calls = 0
    PGD(steps=3, loss=no_nat, init=init)(model, x, y)
    assert counter.calls == 3


def _modes(model):
    return [m.training for m in model.modules()]


def _buffers(model):
    return {k: v.clone() for k, v in model.named_buffers()}


@pytest.mark.parametrize("bn_mode", ["eval", "train", "train_frozen"])
def test_mode_and_bn_buffers_restored(batch, bn_mode):
    x, y = batch
    model = small_net().train()
    model[3].eval()  # a mixed state must come back exactly
    modes, buffers = _modes(model), _buffers(model)
    counter = ForwardCounter(model[1])
    PGD(steps=2, bn_mode=bn_mode)(model, x, y)
    assert _modes(model) == modes
    assert model[1].track_running_stats
    assert set(counter.training) == {bn_mode != "eval"}
    changed = not torch.equal(buffers["1.running_mean"], model[1].running_mean)
    assert changed == (bn_mode == "train")
    if bn_mode == "train_frozen":
        assert model[1].num_batches_tracked.item() == buffers["1.num_batches_tracked"].item()


def test_modes_restored_when_the_loss_raises(batch):
    x, y = batch
    model = small_net().train()

    def boom(logits_adv, y, logits_nat):
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError):
        PGD(steps=1, loss=boom, bn_mode="train_frozen")(model, x, y)
    assert all(_modes(model)) and model[1].track_running_stats
    with pytest.raises(ZeroDivisionError):
        PGD(steps=1, loss=boom, bn_mode="eval")(model, x, y)
    assert all(_modes(model))


def test_no_parameter_grads_and_requires_grad_untouched(batch):
    x, y = batch
    model = small_net().eval()
    model[0].bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    PGD(steps=2, loss="kl")(model, x, y)
    FGSM()(model, x, y)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_works_under_no_grad_and_on_non_contiguous_input(batch):
    x, y = batch
    model = small_net().eval()
    x_t = x.transpose(2, 3)
    assert not x_t.is_contiguous()
    attack = PGD(steps=3, init="none")
    with torch.no_grad():
        x_adv = attack(model, x_t, y)
    assert torch.equal(x_adv, attack(model, x_t.contiguous(), y))
    assert not torch.equal(x_adv, x_t)


def test_init_modes(batch):
    x, y = batch
    model = small_net().eval()
    assert torch.equal(PGD(steps=0, init="none")(model, x, y), x)
    uniform = PGD(eps=0.1, steps=0)(model, x, y)  # the default start is uniform in the ball
    with pytest.raises(TypeError):  # one knob for the start: init (no second random_start)
        PGD(random_start=False)
    assert not torch.equal(uniform, x) and distance(uniform, x, "Linf").max() <= 0.1 + 1e-6
    normal = PGD(eps=0.1, init="normal", init_std=0.01)
    start = normal.initial_point(x)
    assert start.min() < 0 and start.max() > 1  # not clipped before the first step
    assert abs((start - x).std().item() - 0.01) < 2e-3
    assert PGD(eps=0.1, init="uniform").initial_point(x).min() >= 0
    l2 = PGD(eps=0.5, norm="L2", init="uniform").initial_point(x)
    assert distance(l2, x, "L2").max() <= 0.5 + 1e-5
    out = normal(model, x, y)
    assert out.min() >= 0 and distance(out, x, "Linf").max() <= 0.1 + 1e-6


def test_fgsm_matches_closed_form_on_a_binary_linear_model():
    model = linear_net(num_classes=2, dim=12)
    x = 0.25 + 0.5 * torch.rand(200, 12)  # interior: no clipping at eps = 0.05
    y = model(x).argmax(1)
    eps = 0.05
    x_adv = FGSM(eps=eps)(model, x, y)
    w = model[1].weight.detach()
    away = (w[1 - y] - w[y]).sign()  # d CE / dx ∝ (1 - p_y) (w_other - w_y)
    assert torch.allclose(x_adv, x + eps * away, atol=1e-6)
    with torch.no_grad():
        logits = model(x)
        margin = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, 1 - y[:, None]).squeeze(1)
        threshold = eps * (w[1 - y] - w[y]).abs().sum(1)
        flips = margin < threshold
        clear = (margin - threshold).abs() > 1e-4  # rounding cannot decide these
        assert flips[clear].any() and (~flips[clear]).any()
        assert torch.equal((model(x_adv).argmax(1) != y)[clear], flips[clear])


def test_fgsm_step_follows_eps_ramp():
    attack = FGSM(eps=0.1)
    attack.eps = 0.02
    assert attack.alpha == 0.02
    model = linear_net()
    x, y = torch.rand(4, 3, 8, 8) * 0.5 + 0.25, torch.zeros(4, dtype=torch.long)
    assert distance(attack(model, x, y), x, "Linf").max() == pytest.approx(0.02, abs=1e-6)


def test_fgsm_refuses_a_step_size_other_than_eps():
    attack = FGSM(eps=0.1)
    with pytest.raises(AttackError, match=r"FGSM's step size is always its eps.*set attack.eps instead"):
        attack.alpha = 0.01
    assert attack.alpha == attack.eps == 0.1


def test_l2_zero_gradient_gives_finite_unchanged_point():
    model = linear_net()
    nn.init.zeros_(model[1].weight)
    x, y = torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    x_adv = PGD(eps=0.5, norm="L2", steps=3, init="none")(model, x, y)
    assert torch.equal(x_adv, x)


def test_user_errors_and_the_budget_method(batch):
    x, y = batch
    model = linear_net()
    with pytest.raises(AttackError, match="eps"):
        PGD(eps=-0.1)
    with pytest.raises(AttackError, match="steps"):
        PGD(steps=-1)
    with pytest.raises(AttackError, match="did you mean 'L2'"):
        PGD(norm="l2")
    with pytest.raises(AttackError, match="choices"):
        PGD(loss="xent")
    with pytest.raises(AttackError):
        PGD(init="gauss")
    with pytest.raises(AttackError):
        PGD(bn_mode="frozen")
    with pytest.raises(AttackError, match=r"\[0,1\]"):
        PGD()(model, x * 255, y)
    with pytest.raises(AttackError, match="labels"):
        PGD()(model, x, y[:3])
    attack = PGD(eps=0.1, alpha=0.02, steps=1)
    with pytest.raises(AttackError, match="eps"):  # checked by the one budget method
        attack.set_budget(-1.0, 0.01, 1)
    with pytest.raises(AttackError, match="step_size"):
        attack.set_budget(0.1, float("nan"), 1)
    with pytest.raises(AttackError, match="steps"):
        attack.set_budget(0.1, 0.01, 1.5)
    assert (attack.eps, attack.alpha, attack.steps) == (0.1, 0.02, 1)  # refused budgets not kept
    attack.set_budget(1 / 255, 1.0, 2)
    assert (attack.eps, attack.alpha, attack.steps) == (1 / 255, 1.0, 2)
    assert distance(attack(model, x, y), x, "Linf").max() <= 1 / 255 + 1e-6


def test_a_call_trusts_the_settings_checked_by_constructor_and_set_budget(batch, monkeypatch):
    import attacks.base
    import attacks.pgd

    x, y = batch
    attack = PGD(eps=0.1, steps=1)
    attack.set_budget(0.05, 0.05, 2)
    for module in (attacks.base, attacks.pgd):
        for name in ("check_budget", "check_setting", "check_nonnegative"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail(f"{a} checked again by a call"))
    x_adv = attack(linear_net(), x, y)
    assert distance(x_adv, x, "Linf").max() <= 0.05 + 1e-6  # the postconditions still run


def test_postcondition_violation_is_a_runtime_error(batch):
    class Broken(Attack):
        def perturb(self, model, x, y):
            return (x + 2 * self.eps).clamp(0, 1)

    x, y = batch
    with pytest.raises(RuntimeError, match="ball"):
        Broken(eps=0.1)(linear_net(), x * 0.5, y)


def test_cw_loss_is_the_margin():
    logits = torch.tensor([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]])
    assert cw_loss(logits, torch.tensor([0, 1])).item() == pytest.approx((2.0 + -1.0) / 2)


def test_dkl_attack_loss_reproduces_the_kl_direction_and_passes_weights():
    from advtrain.losses import gkl_loss as gkl

    logits_nat, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    adv = torch.randn(6, 5, requires_grad=True)
    (g_kl,) = torch.autograd.grad(kl_loss(adv, y, logits_nat), adv)
    (g_dkl,) = torch.autograd.grad(DKLAttackLoss(1.0, 0.0)(adv, y, logits_nat), adv)
    assert torch.allclose(g_kl, g_dkl, atol=1e-6)
    prior = torch.softmax(torch.randn(5, 5), 1)
    loss = DKLAttackLoss(1.0, 2.0, gamma_a=0.5, weights_fn=lambda t: prior[t])
    expected = gkl(adv, logits_nat, prior[y], alpha=1.0, beta=2.0, gamma=0.5)
    assert torch.allclose(loss(adv, y, logits_nat), expected)
    with pytest.raises(InputError):
        DKLAttackLoss(-1.0, 0.0)


def test_cli_maps_attack_error_to_its_one_line_user_error(monkeypatch, capsys):
    """attacks/ raises its own AttackError (it imports nothing from advtrain); the CLI prints it as
    any user error: one line, exit 2, no traceback."""
    import advtrain.cli.export_cmd as export_cmd
    from advtrain.cli import main

    def run(args):
        PGD(eps=-0.5)  # a user mistake inside the attack library

    monkeypatch.setattr(export_cmd, "run", run)
    rc = main(["export", "x.pt", "--name", "N", "--dataset", "cifar10"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("advtrain export: error: attack eps must be >= 0, got -0.5"), err
    assert issubclass(AttackError, ValueError) and "Traceback" not in err
