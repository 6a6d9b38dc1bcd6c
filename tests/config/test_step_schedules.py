"""Per-step lr schedules against their references: ``cyclic`` against torch's own CyclicLR stepped
after every batch (Wong et al., N-FGSM), ``cyclic_interp`` against numpy's interp (GradAlign)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from advtrain.config.schedules import lr_at_update, momentum_at_update


@pytest.mark.parametrize("E,N", [(3, 5), (4, 4), (1, 7)])
def test_cyclic_matches_torch_cycliclr_with_momentum(E, N):
    cfg = SimpleNamespace(epochs=E, lr=0.2, momentum=0.9, schedule="cyclic", lr_table=None,
                          warmup_epochs=0)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2, momentum=0.9)
    steps = E * N  # train_fgsm.py: lr_steps = epochs * len(train_loader); up = down = lr_steps / 2
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.0, max_lr=0.2, step_size_up=steps / 2,
                                              step_size_down=steps / 2)
    for e in range(1, E + 1):
        for i in range(N):
            k = (e - 1) * N + i
            lr, mom = lr_at_update(k, N, cfg), momentum_at_update(k, N, cfg)
            g = opt.param_groups[0]
            assert math.isclose(lr, g["lr"], rel_tol=1e-9, abs_tol=1e-15), (e, i, lr, g["lr"])
            assert math.isclose(mom, g["momentum"], rel_tol=1e-9), (e, i, mom, g["momentum"])
            opt.step()
            sched.step()


@pytest.mark.parametrize("E,N", [(30, 7), (5, 3), (2, 4)])
def test_cyclic_interp_matches_numpy_interp(E, N):
    cfg = SimpleNamespace(epochs=E, lr=0.3, momentum=0.9, schedule="cyclic_interp", lr_table=None,
                          warmup_epochs=0)
    for e in range(1, E + 1):
        for i in range(N):
            t = e - 1 + (i + 1) / N  # train.py: lr_schedule(epoch - 1 + (i + 1) / len(train_batches))
            want = np.interp([t], [0, E * 2 // 5, E], [0, 0.3, 0])[0]
            k = (e - 1) * N + i
            lr, mom = lr_at_update(k, N, cfg), momentum_at_update(k, N, cfg)
            assert math.isclose(lr, want, rel_tol=1e-12, abs_tol=1e-15) and mom == 0.9
