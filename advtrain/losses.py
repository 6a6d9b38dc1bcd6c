r"""Loss core: decoupled KL (DKL), IKL (v1), GKL (v2), TRADES KL and the class-wise prior.

Notation (SPEC §1-§2). Per sample: teacher logits ``t`` (in adversarial training: the natural
logits ``n``), student logits ``s`` (the adversarial logits ``a``); ``p = softmax(t)``,
``q = softmax(s)``; ``sg`` = stop-gradient. All functions take ``(logits_student, logits_teacher)``
as 2-D ``(B, C)`` tensors and return a scalar (batch mean).

Letters follow the reference *code*: **alpha multiplies the soft-label cross-entropy, beta
multiplies the weighted MSE (wMSE)**. The papers' equations use the opposite letters.

The wMSE never builds a ``(B, C, C)`` tensor: with ``d = t - s`` and per-sample weights ``u``,

    Σ_{j,k} u_j u_k ((t_j - t_k) - (s_j - s_k))² = 2·(Σ_j u_j)·Σ_j u_j (d_j - μ)²,
    μ = Σ_j u_j d_j / Σ_j u_j,

which costs O(B·C) time and memory; the centred form avoids the cancellation of the expanded
``2[(Σu)(Σu d²) - (Σu d)²]`` in float32.

Example::

    prior = ClassPrior(10)
    loss, terms = gkl_loss(logits_adv, logits_nat, prior.weights(y), alpha=4, beta=20,
                           return_terms=True)          # terms = {"wmse": ..., "soft_ce": ...}
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advtrain.errors import InputError

__all__ = [
    "input_grad",
    "grad_align_cosine",
    "weighted_pair_mse",
    "soft_cross_entropy",
    "dkl_loss",
    "ikl_loss",
    "gkl_loss",
    "trades_kl",
    "DKLAttackLoss",
    "ClassPrior",
]


# ----------------------------------------------------------------------------- validation
def _check_logits(name: str, logits) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError(f"{name} must be a 2-D (B, C) tensor of logits; got {shape}")


def _check_pair(student, teacher, names=("logits_student", "logits_teacher")) -> None:
    _check_logits(names[0], student)
    _check_logits(names[1], teacher)
    if student.shape != teacher.shape:
        raise InputError(
            f"{names[1]} has shape {tuple(teacher.shape)} but {names[0]} has shape "
            f"{tuple(student.shape)}; both must be the same (B, C)"
        )


def _check_weights(weights, like: Tensor, name: str = "class_weights") -> None:
    if not isinstance(weights, Tensor) or weights.shape != like.shape:
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise InputError(
            f"{name} must have shape (B, C) = {tuple(like.shape)} like the logits (one prior row "
            f"per sample, e.g. ClassPrior.weights(y)); got {shape}"
        )


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be {bound}; got {value}")


# ----------------------------------------------------------------------------- building blocks
def _pair_sum(student: Tensor, teacher: Tensor, u: Tensor) -> Tensor:
    """Unchecked core of :func:`weighted_pair_mse`; ``u`` must already be a constant."""
    # Subtracting each row's (constant) mean leaves pairwise differences unchanged and keeps the
    # float32 error relative to the logit spread instead of the logit offset.
    d = (teacher - teacher.detach().mean(dim=1, keepdim=True)) - (
        student - student.detach().mean(dim=1, keepdim=True))
    mass = u.sum(dim=1, keepdim=True)
    with torch.no_grad():  # μ minimises Σ u (d - μ)², so ∂L/∂μ = 0: detaching it is exact
        mu = (u * d).sum(dim=1, keepdim=True) / mass.clamp_min(torch.finfo(u.dtype).tiny)
    return 2.0 * mass.squeeze(1) * (u * (d - mu).square()).sum(dim=1)


def weighted_pair_mse(logits_student: Tensor, logits_teacher: Tensor, weights: Tensor) -> Tensor:
    r"""Per-sample weighted pairwise MSE, shape ``(B,)``.

    .. math:: L_i = \sum_{j,k} u_{ij} u_{ik} ((t_{ij}-t_{ik}) - (s_{ij}-s_{ik}))^2
                  = 2 (\sum_j u_{ij}) \sum_j u_{ij} (d_{ij} - \mu_i)^2

    with ``d = t - s`` and ``μ_i = Σ_j u_ij d_ij / Σ_j u_ij`` (0 when the row of ``u`` is 0).
    Gradients flow to both logit sets; ``weights`` (``u``, non-negative, ``(B, C)``) are
    constants (detached). O(B·C) time and memory.
    """
    _check_pair(logits_student, logits_teacher)
    _check_weights(weights, logits_student, "weights")
    return _pair_sum(logits_student, logits_teacher, weights.detach().to(logits_student.dtype))


def _soft_ce(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Unchecked core of :func:`soft_cross_entropy`."""
    if temperature != 1:
        student, teacher = student / temperature, teacher / temperature
    target = F.softmax(teacher.detach(), dim=1)
    return -(target * F.log_softmax(student, dim=1)).sum(dim=1).mean()


def soft_cross_entropy(logits_student: Tensor, logits_teacher: Tensor,
                       temperature: float = 1.0) -> Tensor:
    r"""Batch-mean soft-label CE with a detached target.

    .. math:: L_s = -\frac1B \sum_i \sum_j sg(softmax(t_i/τ))_j \log softmax(s_i/τ)_j
    """
    _check_pair(logits_student, logits_teacher)
    _check_positive("temperature", temperature)
    return _soft_ce(logits_student, logits_teacher, temperature)


def _combine(wmse: Tensor, soft_ce: Tensor, alpha: float, beta: float, return_terms: bool):
    loss = beta * wmse + alpha * soft_ce
    if return_terms:
        return loss, {"wmse": wmse.detach(), "soft_ce": soft_ce.detach()}
    return loss


# ----------------------------------------------------------------------------- the losses
def dkl_loss(logits_student: Tensor, logits_teacher: Tensor, *, alpha: float = 1.0,
             beta: float = 1.0, temperature: float = 1.0, return_terms: bool = False):
    r"""Decoupled KL of Theorem 1 (DKL paper), per-sample teacher weights.

    With ``t' = t/τ``, ``s' = s/τ``, ``p = softmax(t')``, ``q = softmax(s')``:

    .. math:: DKL = \frac{β}{4B} \sum_i \sum_{j,k} sg(p_{ij} p_{ik})
                    (Δt'_{i,jk} - sg(Δs'_{i,jk}))^2 - \frac{α}{B} \sum_i \sum_j sg(p_{ij}) \log q_{ij}

    For ``alpha = beta = 1`` its gradients w.r.t. *both* logit sets equal those of
    ``mean_i KL(p_i ‖ q_i)`` (the values differ). ``return_terms=True`` returns
    ``(loss, {"wmse": ..., "soft_ce": ...})`` with the unweighted terms.
    """
    _check_pair(logits_student, logits_teacher)
    _check_positive("temperature", temperature)
    t, s = logits_teacher, logits_student
    if temperature != 1:
        t, s = t / temperature, s / temperature
    p = F.softmax(t.detach(), dim=1)
    wmse = 0.25 * _pair_sum(s.detach(), t, p).mean()
    soft_ce = -(p * F.log_softmax(s, dim=1)).sum(dim=1).mean()
    return _combine(wmse, soft_ce, alpha, beta, return_terms)


def ikl_loss(logits_student: Tensor, logits_teacher: Tensor, class_weights: Tensor, *,
             alpha: float = 1.0, beta: float = 1.0, return_terms: bool = False):
    r"""IKL-AT loss (DKLv1): student = adversarial logits ``a``, teacher = natural logits ``n``.

    .. math:: L = \frac{β}{4B} \sum_i \sum_{j,k} u_{ij} u_{ik} ((n_{ij}-n_{ik}) - (a_{ij}-a_{ik}))^2
                  - \frac{α}{B} \sum_i \sum_j sg(softmax(n_i))_j \log softmax(a_i)_j

    ``class_weights`` = ``u``, ``(B, C)``: each sample's row of the class prior (constants). No
    stop-gradient on either logit set inside the wMSE (SPEC §2.2); temperature 1 throughout.
    """
    _check_pair(logits_student, logits_teacher)
    _check_weights(class_weights, logits_student)
    u = class_weights.detach().to(logits_student.dtype)
    wmse = 0.25 * _pair_sum(logits_student, logits_teacher, u).mean()
    soft_ce = _soft_ce(logits_student, logits_teacher)
    return _combine(wmse, soft_ce, alpha, beta, return_terms)


def gkl_loss(logits_student: Tensor, logits_teacher: Tensor,
             class_weights: Optional[Tensor] = None, *, alpha: float = 1.0, beta: float = 1.0,
             gamma: float = 1.0, temperature: float = 1.0, return_terms: bool = False):
    r"""GKL loss (DKLv2): the IKL wMSE normalised by the total pair weight.

    With ``u = class_weights ** γ`` (constants; per-sample ``softmax(teacher) ** γ`` when
    ``class_weights`` is None):

    .. math:: L = β \frac{\sum_i \sum_{j,k} u_{ij} u_{ik} ((n_{ij}-n_{ik}) - (a_{ij}-a_{ik}))^2}
                         {4 \sum_i (\sum_j u_{ij})^2}
                  - \frac{α}{B} \sum_i \sum_j sg(softmax(n_i/τ))_j \log softmax(a_i/τ)_j

    ``temperature`` scales only the soft CE (as ``GKL_KD``; no τ² factor); the wMSE uses raw
    logits. For ``γ = 1`` and rows of ``class_weights`` summing to 1 the denominator is ``4B`` and
    this equals :func:`ikl_loss`.
    """
    _check_pair(logits_student, logits_teacher)
    _check_positive("gamma", gamma, allow_zero=True)
    _check_positive("temperature", temperature)
    if class_weights is None:
        class_weights = F.softmax(logits_teacher.detach(), dim=1)
    _check_weights(class_weights, logits_student)
    with torch.no_grad():
        u = class_weights.to(logits_student.dtype)
        u = u if gamma == 1 else u.pow(gamma)
        scale = 0.25 / u.sum(dim=1).square().sum().clamp_min(torch.finfo(u.dtype).tiny)
    wmse = _pair_sum(logits_student, logits_teacher, u).sum() * scale
    soft_ce = _soft_ce(logits_student, logits_teacher, temperature)
    return _combine(wmse, soft_ce, alpha, beta, return_terms)


def trades_kl(logits_adv: Tensor, logits_nat: Tensor) -> Tensor:
    r"""TRADES robust term, gradients through both arguments (SPEC §4.1).

    .. math:: \frac1B \sum_i KL(softmax(n_i) ‖ softmax(a_i))
              = \frac1B \sum_i \sum_j p_{ij} (\log p_{ij} - \log q_{ij})
    """
    _check_pair(logits_adv, logits_nat, names=("logits_adv", "logits_nat"))
    log_p = F.log_softmax(logits_nat, dim=1)
    log_q = F.log_softmax(logits_adv, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


# ----------------------------------------------------------------------------- class prior
class DKLAttackLoss:
    r"""GKL/DKL attack loss :math:`α_a L_s(a, n) + β_a L_w(a, n)` (SPEC §2.3), via ``gkl_loss``.

    ``weights_fn(y) -> B×C`` gives the class weights (rows of the current class prior ``W[y]``,
    raised to ``gamma_a`` inside ``gkl_loss``); ``None`` uses the per-sample ``softmax(n)``.
    Reference values: CIFAR-10 ``(α_a, β_a) = (1, 0)`` (exactly the TRADES KL direction),
    CIFAR-100 ``(1, 1)``; ``γ_a = 1`` in both.

    Example::

        loss = DKLAttackLoss(1.0, 1.0, weights_fn=lambda y: prior.weights(y))
        attack = PGD(eps=8/255, alpha=2/255, steps=5, loss=loss, init="normal")
    """

    needs_nat = True

    def __init__(self, alpha_a: float, beta_a: float, gamma_a: float = 1.0,
                 weights_fn: Optional[Callable[[Tensor], Tensor]] = None):
        for name, value in (("alpha_a", alpha_a), ("beta_a", beta_a), ("gamma_a", gamma_a)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise InputError(f"DKLAttackLoss {name} must be a number >= 0, got {value!r}")
        self.alpha_a, self.beta_a, self.gamma_a = float(alpha_a), float(beta_a), float(gamma_a)
        self.weights_fn = weights_fn

    def __call__(self, logits_adv: Tensor, y: Tensor, logits_nat: Optional[Tensor]) -> Tensor:
        if logits_nat is None:
            raise InputError("DKLAttackLoss needs the natural logits; keep needs_nat=True")
        weights = None if self.weights_fn is None else self.weights_fn(y)
        if weights is not None:
            weights = weights.detach()
        return gkl_loss(logits_adv, logits_nat.detach(), weights, alpha=self.alpha_a,
                        beta=self.beta_a, gamma=self.gamma_a)

    def __repr__(self) -> str:
        return (f"DKLAttackLoss(alpha_a={self.alpha_a}, beta_a={self.beta_a}, "
                f"gamma_a={self.gamma_a}, weights_fn={self.weights_fn!r})")


class ClassPrior(nn.Module):
    r"""Class-wise global prior ``W`` (C×C, row c a probability vector), SPEC §2.1.

    ``W = 1/C`` until the first :meth:`end_epoch`. During an epoch :meth:`update` accumulates
    ``M ← M + onehot(y)ᵀ softmax(n/T)`` (no grad); :meth:`end_epoch` sets, for every class seen
    in the epoch,

    .. math:: W_c ← m · M_c / \sum_k M_{ck} + (1 - m) · W_c

    (``m`` = ``momentum``, 1 in the reference), keeps the previous row of a class absent from the
    epoch (SPEC §10.4), and resets ``M``. :meth:`weights` returns ``W[y]``. All state lives in
    buffers, so it travels with ``state_dict()``.
    """

    def __init__(self, num_classes: int, momentum: float = 1.0):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(f"num_classes must be a positive integer; got {num_classes!r}")
        if not 0.0 < momentum <= 1.0:
            raise InputError(f"momentum must be in (0, 1]; got {momentum}")
        self.num_classes = num_classes
        self.momentum = float(momentum)
        self.register_buffer("weight", torch.full((num_classes, num_classes), 1.0 / num_classes))
        self.register_buffer("accum", torch.zeros(num_classes, num_classes))
        self.register_buffer("counts", torch.zeros(num_classes))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, momentum={self.momentum}"

    @torch.no_grad()
    def update(self, logits_nat: Tensor, y: Tensor, temperature: float = 1.0) -> None:
        """Accumulate ``onehot(y)ᵀ softmax(logits_nat / temperature)`` for this epoch."""
        _check_logits("logits_nat", logits_nat)
        _check_positive("temperature", temperature)
        if logits_nat.shape[1] != self.num_classes:
            raise InputError(f"logits_nat has {logits_nat.shape[1]} classes but the prior has "
                             f"{self.num_classes}; build ClassPrior(num_classes) to match the model")
        if not isinstance(y, Tensor) or y.shape != logits_nat.shape[:1] or y.is_floating_point():
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise InputError(f"y must be integer labels of shape ({logits_nat.shape[0]},) "
                             f"matching logits_nat; got {shape}")
        probs = F.softmax(logits_nat.detach().to(self.accum.dtype) / temperature, dim=1)
        y = y.to(self.accum.device)
        self.accum.index_add_(0, y, probs)
        self.counts.index_add_(0, y, torch.ones_like(y, dtype=self.counts.dtype))

    @torch.no_grad()
    def end_epoch(self, reduce: Optional[Callable[[Tensor], None]] = None) -> None:
        """Turn the epoch's accumulator into the new prior and reset it.

        ``reduce`` (optional, for DDP) is called on ``accum`` and ``counts`` and must sum them
        across processes in place, e.g. ``torch.distributed.all_reduce``.
        """
        if reduce is not None:
            reduce(self.accum)
            reduce(self.counts)
        rowsum = self.accum.sum(dim=1, keepdim=True)
        seen = (self.counts > 0) & (rowsum.squeeze(1) > 0)
        fresh = self.accum / rowsum.clamp_min(torch.finfo(self.accum.dtype).tiny)
        blended = self.momentum * fresh + (1.0 - self.momentum) * self.weight
        self.weight.copy_(torch.where(seen.unsqueeze(1), blended, self.weight))
        self.accum.zero_()
        self.counts.zero_()

    def weights(self, y: Tensor) -> Tensor:
        """Per-sample prior rows ``W[y]``, shape ``(B, C)`` (a constant: no grad)."""
        if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point():
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise InputError(f"y must be a 1-D tensor of integer labels; got {shape}")
        return self.weight[y.to(self.weight.device)]

    def forward(self, y: Tensor) -> Tensor:
        return self.weights(y)


# ----------------------------------------------------------------------------- GradAlign (SPEC §13.3)

def input_grad(model: nn.Module, x: Tensor, y: Tensor, *, create_graph: bool = False) -> Tensor:
    """``∇_x CE(f(x), y)`` (batch mean) w.r.t. the input only; ``create_graph=True`` keeps the graph
    for a double backprop into the parameters (GradAlign's second gradient)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return grad


def grad_align_cosine(g1: Tensor, g2: Tensor) -> Tensor:
    r"""GradAlign's misalignment :math:`1 − \frac1{|I|}\sum_{i∈I} \cos(g1_i, g2_i)` (Andriushchenko &
    Flammarion 2020, ``tml-epfl/understanding-fast-adv-training`` train.py:192-200, utils.py:70-91).

    ``g1`` is the (detached) input gradient at the FGSM start point, ``g2`` the input gradient at
    ``x + η`` (η uniform in the ε-ball, not clamped to [0,1]) with its graph; the cosine of each
    example is taken over all its coordinates; examples where either gradient is exactly zero are
    left out of the mean, as the reference does (none left: 0).
    """
    a, b = g1.detach().flatten(1), g2.flatten(1)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    keep = (na != 0) & (nb != 0)
    if not bool(keep.any()):
        return g2.sum() * 0.0
    cos = ((a[keep] / na[keep, None]) * (b[keep] / nb[keep, None])).sum(dim=1)
    return 1.0 - cos.mean()
