"""``pgd_best`` (attacks.BestPGD): each example gets its highest-loss PGD iterate among the start and
the K steps. The expected point is built independently: PGD with 0..K steps from the same seed gives
the iterates (PGD's own, verified attack), their per-example losses are computed in float64 here, and
the argmax per example (the earliest on ties) is the expected output."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attacks import PGD, TRAINING_ATTACKS, AttackError, BestPGD


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5)).double()


def _loss(name, logits, y, nat):
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if name == "cw":
        true = logits.gather(1, y[:, None])[:, 0]
        return logits.masked_fill(F.one_hot(y, 5).bool(), float("-inf")).amax(1) - true
    p = F.softmax(nat, 1)
    return (p * (p.log() - F.log_softmax(logits, 1))).sum(1)


@pytest.mark.parametrize("loss,init", [("ce", "uniform"), ("ce", "none"), ("cw", "uniform"), ("kl", "normal")])
def test_best_iterate_is_the_per_example_argmax_of_pgds_iterates(loss, init):
    model = _model()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(12, 3, 8, 8, generator=g).double(), torch.randint(0, 5, (12,), generator=g)
    K, eps, alpha = 4, 8 / 255, 6 / 255  # a large step: the loss does not rise monotonically
    iterates = []
    for k in range(K + 1):
        torch.manual_seed(3)
        iterates.append(PGD(eps=eps, alpha=alpha, steps=k, loss=loss, init=init)(model, x, y))
    with torch.no_grad():
        nat = model(x)
        losses = torch.stack([_loss(loss, model(xk), y, nat) for xk in iterates])  # (K+1) x B
    pick = losses.argmax(0)  # the first maximum: ties keep the earlier iterate
    want = torch.stack([iterates[int(k)][i] for i, k in enumerate(pick)])
    torch.manual_seed(3)
    got = BestPGD(eps=eps, alpha=alpha, steps=K, loss=loss, init=init)(model, x, y)
    assert len(set(pick.tolist())) > 1  # different examples keep different iterates
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # never worse than PGD's last iterate, example by example
    with torch.no_grad():
        assert bool((_loss(loss, model(got), y, nat) >= losses[-1] - 1e-12).all())


def test_pgd_best_is_registered_and_refuses_a_loss_without_a_per_example_form():
    assert TRAINING_ATTACKS["pgd_best"] is BestPGD

    def mean_only(logits, y, nat=None):
        return logits.sum()

    with pytest.raises(AttackError, match="per-example attack loss"):
        BestPGD(eps=8 / 255, alpha=2 / 255, steps=2, loss=mean_only)


def test_pgd_best_trains_through_the_config(tmp_path):
    """attack: {name: pgd_best} builds BestPGD for pgd_at and refuses GKL-AT's callable loss."""
    from advtrain import config as C
    from advtrain.train.setup import make_objective

    cfg = C.from_dict({"objective": {"name": "pgd_at"}, "attack": {"name": "pgd_best", "init": "none"}})
    assert isinstance(make_objective(cfg, 10).attack, BestPGD)
    cfg = C.from_dict({"objective": {"name": "gkl_at"}, "attack": {"name": "pgd_best"}})
    with pytest.raises(AttackError, match="per-example attack loss"):
        make_objective(cfg, 10)
