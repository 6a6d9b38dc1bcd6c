"""The training loop: ``fit(config) -> run_dir`` (exported as ``advtrain.fit``).

One optimizer step (SPEC 2.5, order matters; :mod:`advtrain.train.step`, which also owns gradient
accumulation over ``optim.accum_steps`` micro-batches and its exact semantics)::

    eps_t, eta, K = attack_budget(epoch)            # once per epoch with the lr: attack.set_budget
    x_adv = objective.perturb(model, x, y)          # inner maximisation (attack switches modes)
    model.train(); diff = awp.perturb(...)          # AWP from epoch awp.warmup on
    loss, terms = objective.loss(model, x, x_adv, y)  # these three under one autocast (bf16)
    zero_grad; loss.backward(); optimizer.step()    # SGD over model + objective.extra_parameters()
    awp.restore(diff); ema.update(model)

Per epoch: ``objective.on_epoch_end()``, the BN running statistics averaged over the ranks
(``dist_bn: reduce``), clean and PGD accuracy on a fixed test subset (PGD at the
final ``attack.eps`` in ``attack.norm``), ``RUN_DIR/epoch_{e}.pt`` + ``RUN_DIR/last.pt``, a
``metrics.csv`` row and ``curves.png``/``.svg``. With ``data.holdout`` images held out, every
``eval.holdout_every`` epochs the EMA weights (the model's without EMA) are scored by PGD-CW on them
(DM recipe, SPEC 6) and ``RUN_DIR/best.pt`` keeps the best epoch (ties: the later one).
``last.pt`` is also written every ``run.checkpoint_every_steps`` optimizer steps with the loader
position, so a run killed at any instant resumes (``resume=True``) to bit-identical weights on CPU.
A non-finite loss or weight stops the run with one line (``nan_policy: stop``) or skips the
optimizer step (``skip``); an epoch in which every step was skipped stops the run (it trained
nothing). Each epoch prints one
line (:mod:`advtrain.train.runlog`), the end of the run the summary table.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn

from advtrain.train import checkpoint as ck
from advtrain import config as C
from advtrain import distributed as D
from advtrain.train import metrics as M
from advtrain.io.atomic import atomic_write_text
from advtrain.train.runlock import RunLock, lock_new_run_dir
from advtrain.train.nonfinite import NonFiniteError
from advtrain.train.parts import Progress, RNGState, load_states, save_states, stateful
from advtrain.train.runlog import RunLog
from advtrain.config.schedules import (PER_UPDATE, AttackBudget, attack_budget, lr_at, lr_at_update,
                                      momentum_at, momentum_at_update)
from advtrain.train.teacher import identity as teacher_identity
from advtrain.train.setup import check_train_images, train_data_flags
from advtrain.train.step import Stepper, steps_per_epoch
from advtrain.train.setup import build_parts, prepare_run_dir, start_run_dir
from advtrain.utils import resolve_device
from advtrain.utils import git_commit, package_versions


BEST = "best.pt"  # best held-out PGD epoch (data.holdout > 0), or the best good epoch (guard on)


def fit(config: Union[C.Config, dict, str, os.PathLike, None] = None, *, run_dir: Optional[str] = None,
        resume: bool = False, force: bool = False, stop_after: Optional[int] = None) -> str:
    """Train from ``config`` (Config, dict or YAML path); returns the run directory.

    ``resume=True`` continues ``run_dir`` from its ``last.pt``, else its newest intact ``epoch_N.pt``
    (config from ``RUN_DIR/config.yaml`` when ``config`` is None; a different config is refused unless
    ``force``). ``stop_after=e`` returns after epoch ``e`` (used to test interruption). The run
    directory is locked (``RUN_DIR/train.lock``) until this returns: a second ``fit`` on it is refused.
    """
    new_dir, locks = False, []
    if D.launched():  # torchrun: rank 0 prepares the run directory, the other ranks follow
        D.init_from_env(resolve_device(_peek(config, run_dir).run.device, flag="run.device"))

        def on_main():
            if resume and run_dir and os.path.isdir(run_dir):
                locks.append(RunLock(run_dir).acquire())
            out = prepare_run_dir(config, run_dir, resume, force)
            if not resume:
                locks.append(lock_new_run_dir(out[1]))
                start_run_dir(out[0], out[1])
            return out

        try:
            cfg, run_dir, state = D.prepare_on_main(
                on_main, lambda rd: prepare_run_dir(config, rd, True, True))
        except BaseException:
            _release(locks)
            raise
    try:
        if not D.launched():
            if resume and run_dir and os.path.isdir(run_dir):  # before any file is touched
                locks.append(RunLock(run_dir).acquire())
            cfg, run_dir, state = prepare_run_dir(config, run_dir, resume, force)
            new_dir = not resume
        trainer = Trainer(cfg, run_dir, state)
        if new_dir:  # only now: a mistake found while building the parts leaves no directory behind
            locks.append(lock_new_run_dir(run_dir))
            start_run_dir(cfg, run_dir)
        out = trainer.train(stop_after)
        D.barrier()  # rank 0 has written its files before any rank returns
    finally:
        _release(locks)
    return out


def _release(locks) -> None:
    for lock in locks:
        lock.release()


def _peek(config, run_dir) -> C.Config:
    """The config as given (or stored in ``run_dir``), only to choose the DDP backend."""
    from advtrain.train.setup import _as_config

    return _as_config(config if config is not None else os.path.join(run_dir, "config.yaml"))


class Trainer:
    """The loop over the :class:`~advtrain.train.parts.Parts` of one run (``self.parts``); :meth:`train`."""

    def __init__(self, cfg: C.Config, run_dir: str, state: Optional[Dict[str, Any]]):
        self.cfg, self.run_dir = cfg, run_dir
        self.resolved = C.resolve(cfg)
        self.parts = p = build_parts(cfg, fresh=state is None)
        self.E = cfg.optim.epochs
        self.progress, self.rng = Progress(batches_per_epoch=len(p.loader)), RNGState()
        self.accum = cfg.optim.accum_steps  # micro-batches per optimizer step
        self.steps_per_epoch = steps_per_epoch(len(p.loader), self.accum)
        self.stepper = Stepper(p, cfg, self._nan_message)
        self.budget: Optional[AttackBudget] = None  # the running epoch's training attack
        self.log = RunLog(cfg, run_dir, p.test, D.is_main(), cfg.attack.norm)
        self.meta = {"arch": cfg.model.arch, "dataset": cfg.data.dataset,
                     "num_classes": p.num_classes, "config": self.resolved,
                     "versions": package_versions(), "git_commit": git_commit()}
        if cfg.teacher is not None:  # the teacher's identity, checked on resume
            self.meta["teacher"] = teacher_identity(cfg.teacher, cfg.data.dataset)
        images = getattr(getattr(p.loader, "dataset", None), "identity", None)
        if images is not None:  # an ImageFolder run: its class list and image list
            self.meta["train_images"] = images
            check_train_images(cfg, images, state)
        self.meta["flags"] = train_data_flags(cfg, D.is_main())
        if state is not None:
            named = stateful(p, self.progress, self.rng)
            load_states(named, ck.unpack(state, named))
        if p.teacher_check and D.is_main():
            print(f"advtrain: {p.teacher_check}")
        if getattr(p.loader, "from_list", False) and D.is_main():  # data.train_list: long-tail groups
            print(f"advtrain: {M.counts_line(p.loader.class_counts)}")
        # DDP after loading (it broadcasts rank 0's weights), compile last; no-ops by default
        p.model = D.maybe_compile(D.wrap_ddp(p.model, p.device, cfg.sync_bn), cfg.compile, p.device)

    # ------------------------------------------------------------------ the loop
    def train(self, stop_after: Optional[int] = None) -> str:
        counts = getattr(self.parts.loader, "class_counts", None)
        if getattr(self.parts.loader, "from_list", False) and D.is_main():
            M.write_class_counts(counts, os.path.join(self.run_dir, "class_counts.csv"))
        try:
            while self.progress.epoch < self.E and not self._guard_stopped():
                e = self.progress.epoch + 1
                started = time.time()
                self._train_epoch(e)
                note = self._end_epoch(e)
                self.log.epoch_done(self.progress.history[-1], self.E, time.time() - started, note)
                if stop_after is not None and e >= stop_after and e < self.E:
                    return self.run_dir
            self._finish()
        finally:
            self.log.close()
        return self.run_dir

    def _epoch_batches(self, e: int):
        """The loader's iterator for epoch ``e``, at the saved position when resuming mid-epoch."""
        pr = self.progress
        from advtrain.data import set_loader_epoch

        set_loader_epoch(self.parts.loader, e)
        mid_epoch = pr.batch > 0
        if mid_epoch:  # the loader resumes at the saved position; then the saved RNG state
            ck.set_rng_state(pr.epoch_rng)
        else:
            pr.epoch_rng = ck.rng_state()
        it = self.parts.loader.iter_from(pr.batch)  # the skipped batches are not read
        if mid_epoch:
            ck.set_rng_state(self.rng.saved)
        return it

    def _train_epoch(self, e: int) -> None:
        cfg, p, pr = self.cfg, self.parts, self.progress
        self._set_epoch_hparams(e)
        it = self._epoch_batches(e)
        n_batches, n = len(p.loader), cfg.run.checkpoint_every_steps
        bar = _progress(n_batches, pr.batch, f"epoch {e}/{self.E}", cfg.run.progress and D.is_main())
        every = max(1, self.steps_per_epoch // 100)  # <= ~100 curve points per epoch
        start, group = time.time(), None
        for x, y in it:
            if group is None:
                group = self.stepper.group(pr.batch, n_batches)
                self._set_update_lr(e, steps_per_epoch(pr.batch, self.accum))
            self.stepper.micro_batch(group, x, y, e)
            pr.batch += 1
            bar.update(1)
            if not group.complete:
                continue
            self._after_step(self.stepper.finish(group, e), group.size, every, bar)
            group = None
            # only between groups: a resumed run starts at a group boundary
            if n and pr.batch < n_batches and steps_per_epoch(pr.batch, self.accum) % n == 0:
                pr.running["seconds"] += time.time() - start
                start = time.time()
                self._save(epoch_file=False)
        bar.close()
        pr.running["seconds"] += time.time() - start
        pr.flush_trace(self._lr(), self.budget.eps)
        if pr.running["count"] == 0:  # every step skipped: nothing was trained
            raise NonFiniteError(
                f"epoch {e} made no update: every optimizer step had a non-finite loss and was "
                f"skipped ({pr.batch} batches, nan_policy: skip); lower optim.lr, check the data "
                f"and the teacher")

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, e: int) -> Optional[Dict[str, float]]:
        """One optimizer step on the one batch ``(x, y)`` (tests and bench/); None when skipped."""
        terms = self.stepper.step([(x, y)], e)
        if terms is None:
            self.progress.running["skipped_batches"] += 1
        return terms

    def _after_step(self, terms: Optional[Dict[str, float]], size: int, every: int, bar) -> None:
        """Count and log one optimizer step (``terms`` None: skipped, its ``size`` batches too)."""
        pr = self.progress
        if terms is None:
            pr.running["skipped_batches"] += size
            return
        pr.step += 1
        _accumulate(pr.running, terms)
        lr = self._lr()
        pr.add_trace(terms, lr, self.budget.eps, every)
        self.log.step(pr.step, terms, lr, self.budget.eps)
        bar.set_postfix(loss=f"{terms['loss']:.3f}", acc=f"{terms.get('acc_adv', 0):.3f}")

    def _set_epoch_hparams(self, e: int) -> None:
        o, a = self.cfg.optim, self.cfg.attack  # resolved: objective defaults filled in
        for group in self.parts.optimizer.param_groups:
            group["lr"] = lr_at(e, o) * group.get("lr_scale", 1.0)  # layer-wise lr decay's scale
            if o.name == "sgd":
                group["momentum"] = momentum_at(e, o)
        self.budget = attack_budget(e, self.E, a.eps, a.schedule, steps=a.steps, step_size=a.step_size,
                                    ramp=a.ramp)
        self.parts.objective.set_attack_budget(*self.budget)  # whichever attack runs: set_budget

    def _set_update_lr(self, e: int, j: int) -> None:
        """The lr of update ``j`` of epoch ``e`` (per-update schedules; others keep the epoch's)."""
        o = self.cfg.optim
        if o.schedule not in PER_UPDATE:
            return
        k = (e - 1) * self.steps_per_epoch + j
        lr = lr_at_update(k, self.steps_per_epoch, o)
        momentum = (momentum_at_update(k, self.steps_per_epoch, o)
                    if o.schedule == "cyclic" and o.name == "sgd" else None)
        for group in self.parts.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if momentum is not None:  # torch CyclicLR cycles SGD momentum with the lr (Wong, N-FGSM)
                group["momentum"] = momentum

    def _lr(self) -> float:
        """The schedule's lr now (before a group's layer-wise ``lr_scale``), for the logs."""
        group = self.parts.optimizer.param_groups[0]
        return group["lr"] / group.get("lr_scale", 1.0)

    def _nan_message(self, e: int, what: str) -> str:
        last = ck.latest(self.run_dir) or "none yet"
        pr = self.progress
        return (f"non-finite {what} at epoch {e} step {pr.batch + 1} (global step {pr.step + 1}); "
                f"training stopped, last good checkpoint: {last}; lower optim.lr or set nan_policy: skip")

    # ------------------------------------------------------------------ epoch end
    def _end_epoch(self, e: int) -> str:
        """Test, checkpoint and log epoch ``e``; returns the guard's words for the epoch line."""
        p, pr = self.parts, self.progress
        note = ""
        p.objective.on_epoch_end(reduce=D.all_reduce_sum_)  # class prior summed over ranks
        if self.cfg.dist_bn == "reduce":  # ARES: BN running statistics averaged over the ranks
            D.reduce_bn_stats_(p.model, p.ema.shadow if p.ema is not None else None)
        row = {"epoch": e, "lr": self._lr(), "eps_t": self.budget.eps,
               "step_size": self.budget.step_size, "steps": self.budget.steps}
        n = max(pr.running["count"], 1)
        row.update({k: v / n for k, v in pr.running["sums"].items()})
        ev = self.cfg.eval
        if p.test is not None and (e % ev.every == 0 or e == self.E):
            from advtrain.train.setup import clean_and_pgd

            kw = dict(steps=ev.test_pgd_steps, seed=self.cfg.run.seed, **self._threat())
            row["test_clean"], row["test_pgd"] = clean_and_pgd(D.unwrap(p.model), *p.test, **kw)
            if getattr(p.loader, "from_list", False):  # many / medium / few-shot clean accuracy
                from advtrain.train.setup import predictions

                row.update(M.shot_accuracy(predictions(D.unwrap(p.model), p.test[0]), p.test[1],
                                           p.loader.class_counts))
            ema_model = self._ema_model()
            if ema_model is not None:
                row["test_clean_ema"], row["test_pgd_ema"] = clean_and_pgd(ema_model, *p.test, **kw)
            if self.cfg.guard.policy != "off":
                note = self._guard(e, row)
        if p.holdout is not None and ev.holdout_every and (e % ev.holdout_every == 0 or e == self.E):
            self._score_holdout(e, row)
        row["seconds"] = round(pr.running["seconds"], 3)
        row["skipped_batches"] = pr.running["skipped_batches"]
        pr.history.append(row)
        pr.end_epoch(e)
        self._save(epoch_file=True)
        if D.is_main():
            M.write_csv(pr.history, os.path.join(self.run_dir, "metrics.csv"))
            M.plot_curves(pr.history, os.path.join(self.run_dir, "curves.png"), pr.trace)
        return note

    # ------------------------------------------------------------------ catastrophic overfitting
    def _guard(self, e: int, row: Dict[str, Any]) -> str:
        """FGSM next to PGD on the test subset; a good epoch that reaches the best PGD accuracy so far
        writes best.pt, a collapse is flagged and, by ``guard.policy``, stops the run (rollback: with
        the best good epoch's weights restored)."""
        from advtrain.train.guard import check_epoch, message
        from advtrain.train.setup import fgsm_accuracy

        g, pr = self.cfg.guard, self.progress
        row["test_fgsm"] = fgsm_accuracy(D.unwrap(self.parts.model), *self.parts.test, **self._threat())
        state = check_epoch(pr.guard, e, row["test_pgd"], row["test_fgsm"], drop=g.drop,
                            tolerance=g.fgsm_tolerance)
        pr.guard = state
        row["co"] = int(state["fired"])
        row["best_epoch"] = state["good"]["epoch"]
        if state["improved"]:
            pr.best = {"epoch": e, "test_pgd": row["test_pgd"], "test_fgsm": row["test_fgsm"],
                       "weights": "model"}
            self._save_best()  # before last.pt records it: a crash in between only repeats the epoch
        if not state["fired"]:
            return ""
        if g.policy in ("stop", "rollback"):
            state["stopped"] = e
        if g.policy == "rollback":
            self._roll_back()
        return message(state, row["test_pgd"], row["test_fgsm"], g.policy)

    def _guard_stopped(self) -> bool:
        return bool(self.progress.guard and self.progress.guard.get("stopped"))

    def _roll_back(self) -> None:
        """Model (and EMA) weights of ``best.pt``, the best good epoch, back into the run."""
        from advtrain.train.checkpoint import load

        best = load(os.path.join(self.run_dir, BEST))
        named = stateful(self.parts, self.progress, self.rng)
        load_states({k: named[k] for k in ("model", "ema") if k in named},
                    ck.unpack(best, [k for k in ("model", "ema") if k in named]))

    def _threat(self) -> Dict[str, Any]:
        """Norm and final radius of the training attack: what the per-epoch PGD measures."""
        a = self.cfg.attack
        return {"eps": a.eps, "norm": a.norm}

    def _score_holdout(self, e: int, row: Dict[str, Any]) -> None:
        """PGD-CW accuracy on the held-out training images; a new best (>=, as DM) writes best.pt
        before last.pt records it, so a crash in between only repeats the epoch."""
        from advtrain.train.setup import clean_and_pgd

        ema_model = self._ema_model()
        scored = ema_model if ema_model is not None else D.unwrap(self.parts.model)
        clean, robust = clean_and_pgd(scored, *self.parts.holdout, seed=self.cfg.run.seed,
                                      steps=self.cfg.eval.holdout_pgd_steps, loss="cw",
                                      **self._threat())
        row["holdout_clean"], row["holdout_pgd"] = clean, robust
        best = self.progress.best
        if best is None or robust >= best["holdout_pgd"]:
            self.progress.best = {"epoch": e, "holdout_pgd": robust, "holdout_clean": clean,
                                  "weights": "ema" if ema_model is not None else "model"}
            self._save_best()
        row["best_epoch"] = self.progress.best["epoch"]

    def _save_best(self) -> None:
        """``RUN_DIR/best.pt``: weights (model, and ema when on) of the best epoch for ``advtrain eval``."""
        if not D.is_main():
            return
        named = stateful(self.parts, self.progress, self.rng)
        weights = ck.pack(save_states({k: named[k] for k in ("model", "ema") if k in named}))
        payload = dict(self.meta, **weights, epoch=self.progress.best["epoch"],
                       best=dict(self.progress.best))
        ck.save(payload, os.path.join(self.run_dir, BEST))

    def _ema_model(self) -> Optional[nn.Module]:
        """A copy of the model holding the EMA weights (None before the first EMA update)."""
        ema = self.parts.ema
        if ema is None or ema.shadow is None:
            return None
        if getattr(self, "_ema_copy", None) is None:
            self._ema_copy = copy.deepcopy(D.unwrap(self.parts.model))
        ema.copy_to(self._ema_copy)
        return self._ema_copy

    def _finish(self) -> None:
        if not D.is_main():
            return
        from advtrain.train.guard import summary_line

        text = M.summary_text(self.progress.history, self.cfg.paper_row, self.log.subset)
        guard = summary_line(self.progress.guard, self.cfg.guard.policy)
        text += ("\n" + guard if guard else "") + "\n" + M.threads_line()
        atomic_write_text(os.path.join(self.run_dir, "summary.txt"), text + "\n")
        print(text)

    # ------------------------------------------------------------------ checkpoints
    def _save(self, epoch_file: bool) -> None:
        """Every part's state (:func:`advtrain.train.parts.stateful`) in the checkpoint layout."""
        if not D.is_main():  # one writer under DDP; every rank holds the same weights
            return
        states = save_states(stateful(self.parts, self.progress, self.rng))
        payload = dict(self.meta, **ck.pack(states))
        if epoch_file:
            ck.save(payload, ck.epoch_path(self.run_dir, self.progress.epoch))
        ck.save(payload, ck.last_path(self.run_dir))


# ---------------------------------------------------------------------- small helpers

def _accumulate(running: Dict[str, Any], terms: Dict[str, float]) -> None:
    for k, v in terms.items():
        running["sums"][k] = running["sums"].get(k, 0.0) + v
    running["count"] += 1


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    from advtrain.utils import show_progress

    return tqdm(total=total, initial=initial, desc=desc, disable=not show_progress(enabled), leave=False,
                dynamic_ncols=True)


__all__ = ["fit", "Trainer", "NonFiniteError"]
