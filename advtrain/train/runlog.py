"""What a run prints and streams while it trains: one line per epoch, and TensorBoard.

Printed (rank 0, whatever ``run.progress`` says; the progress bar is the only optional output)::

    epoch 3/10: lr 0.1000, eps 6.00/255 (PGD-5, step 3.00/255), loss 1.2345, train adv acc 35.20%,
    test subset of 1000 images: clean 45.30%, PGD-10 22.10%, 12.3 s, ETA 1 min 30 s

(on one line; another training attack is named with its budget, e.g. ``eps 8.00/255 (fgsm_rs, step
10.00/255)``, clean training says ``clean training (attack none)``, and the catastrophic-overfitting
guard adds ``FGSM x%`` and its verdict). Accuracies are percentages with ``%`` everywhere (this line, ``summary.txt``,
``curves.png``); ``metrics.csv`` keeps fractions in [0, 1], as its column names say nothing else.

``log.tensorboard: true`` writes ``RUN_DIR/tb/`` event files: per optimizer step ``step/<term>``
(every loss term, ``acc_adv``), ``step/lr`` and ``step/eps_t``; per epoch ``epoch/<column>`` for
every numeric ``metrics.csv`` column. Watch a run live with ``tensorboard --logdir RUN_DIR/tb``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from advtrain.errors import InputError

TB_DIR = "tb"
INSTALL = "pip install tensorboard (or pip install -e '.[tensorboard]')"


def _pct(v) -> str:
    return f"{100 * float(v):.2f}%"


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s"
    h, rest = divmod(s, 3600)
    return (f"{h} h " if h else "") + f"{rest // 60} min {rest % 60} s"


class RunLog:
    """Per-epoch line, end-of-run subset name and (optionally) a TensorBoard writer."""

    def __init__(self, cfg, run_dir: str, test: Optional[tuple], main: bool, norm: str):
        self.run_dir, self.main, self.norm = run_dir, main, norm
        self.pgd_steps = cfg.eval.test_pgd_steps
        self.attack = getattr(cfg.attack, "name", "pgd")  # the training attack the line names
        self.subset = f"test subset of {len(test[1])} images" if test is not None else "no test subset"
        self.tensorboard = bool(cfg.log.tensorboard) and main
        if cfg.log.tensorboard:  # before the run directory exists: a missing package costs nothing
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise InputError(f"log.tensorboard is true but the tensorboard package is not "
                                 f"installed; {INSTALL}, or set log.tensorboard: false") from None
        self._writer = None
        self._walls: list = []

    # ------------------------------------------------------------------ TensorBoard
    def _tb(self):
        if self._writer is None:  # opened at the first value: the run directory exists by then
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=os.path.join(self.run_dir, TB_DIR))
        return self._writer

    def step(self, step: int, terms: Dict[str, float], lr: float, eps_t: float) -> None:
        if not self.tensorboard:
            return
        w = self._tb()
        for k, v in dict(terms, lr=lr, eps_t=eps_t).items():
            w.add_scalar(f"step/{k}", float(v), step)

    def _epoch_scalars(self, row: Dict[str, Any]) -> None:
        w = self._tb()
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                w.add_scalar(f"epoch/{k}", float(v), int(row["epoch"]))
        w.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ printed
    def epoch_done(self, row: Dict[str, Any], epochs: int, wall: float, note: str = "") -> None:
        """Print the epoch's line (and write its TensorBoard scalars); ``wall`` includes testing;
        ``note`` (the catastrophic-overfitting guard's words) ends the line."""
        if not self.main:
            return
        if self.tensorboard:
            self._epoch_scalars(row)
        self._walls.append(wall)
        eta = sum(self._walls) / len(self._walls) * (epochs - row["epoch"])
        line = self.epoch_line(row, epochs, wall, eta)
        print(line + (f"; {note}" if note else ""), flush=True)

    def _eps(self, v: float) -> str:
        return f"{255 * v:.2f}/255" if self.norm == "Linf" else f"{v:.4g}"

    def _training_attack(self, row: Dict[str, Any]) -> str:
        """``eps 8.00/255 (PGD-5, step 4.00/255)``; other attacks by name, clean training as such."""
        if self.attack == "none":
            return "clean training (attack none)"
        if self.attack == "pgd":
            return f"eps {self._eps(row['eps_t'])} (PGD-{row['steps']}, step {self._eps(row['step_size'])})"
        if self.attack == "fgsm":
            return f"eps {self._eps(row['eps_t'])} (fgsm, step = eps)"
        if self.attack == "apgd":
            return f"eps {self._eps(row['eps_t'])} (apgd, {row['steps']} steps)"
        return f"eps {self._eps(row['eps_t'])} ({self.attack}, step {self._eps(row['step_size'])})"

    def epoch_line(self, row: Dict[str, Any], epochs: int, wall: float, eta: float) -> str:
        parts = [f"lr {row['lr']:.4g}", self._training_attack(row)]
        if "loss" in row:
            parts.append(f"loss {row['loss']:.4f}")
        if "acc_adv" in row:
            seen = "train acc" if self.attack == "none" else "train adv acc"  # clean: x' is x
            parts.append(f"{seen} {_pct(row['acc_adv'])}")
        if row.get("test_clean") is not None:
            test = f"{self.subset}: clean {_pct(row['test_clean'])}"
            if row.get("test_pgd") is not None:
                test += f", PGD-{self.pgd_steps} {_pct(row['test_pgd'])}"
            if row.get("test_fgsm") is not None:
                test += f", FGSM {_pct(row['test_fgsm'])}"
            shots = [(g, row.get(f"test_{g}")) for g in ("many", "medium", "few")]
            if any(v is not None for _, v in shots):  # data.train_list: long-tail groups
                test += " (" + ", ".join(f"{g}-shot {_pct(v) if v is not None else 'n/a'}"
                                         for g, v in shots) + ")"
            if row.get("test_clean_ema") is not None:
                test += f"; EMA clean {_pct(row['test_clean_ema'])}"
                if row.get("test_pgd_ema") is not None:
                    test += f", PGD-{self.pgd_steps} {_pct(row['test_pgd_ema'])}"
            parts.append(test)
        if row.get("holdout_pgd") is not None:
            parts.append(f"held-out PGD-CW {_pct(row['holdout_pgd'])} (best epoch {row['best_epoch']})")
        if row.get("skipped_batches"):
            parts.append(f"{row['skipped_batches']} batches skipped (non-finite loss)")
        parts.append(_duration(wall))
        parts.append(f"ETA {_duration(eta)}" if row["epoch"] < epochs else "last epoch")
        return f"epoch {row['epoch']}/{epochs}: " + ", ".join(parts)
