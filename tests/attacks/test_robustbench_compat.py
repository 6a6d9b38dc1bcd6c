"""robustbench 1.1.1 from PyPI works after our install: `autoattack` (official API) over pyautoattack.

Each check runs in a fresh interpreter that never imports advtrain, as a user's script would.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run_fresh(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_import_robustbench_without_advtrain():
    out = run_fresh("""
        import sys
        import robustbench, robustbench.eval
        from robustbench.utils import load_model, ModelInfo
        from autoattack.state import EvaluationState
        assert 'advtrain' not in sys.modules, 'robustbench pulled in advtrain'
        print(callable(load_model), EvaluationState.__module__)
    """)
    assert out.split() == ["True", "pyautoattack.state"]


def test_official_call_style_runs_pyautoattack(tmp_path):
    """AutoAttack(model, norm=, eps=, version=, attacks_to_run=, device=, log_path=) and
    run_standard_evaluation(x, y, bs=, state_path=) as robustbench calls them; a real attack."""
    log = tmp_path / "aa.log"
    out = run_fresh(f"""
        import torch, torch.nn as nn
        from autoattack import AutoAttack
        import pyautoattack.autopgd_base as ap
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()
        x = torch.rand(32, 3, 8, 8).permute(0, 1, 3, 2)   # non-contiguous on purpose
        with torch.no_grad():
            y = model(x).argmax(1)                          # all clean-correct
        adv = AutoAttack(model, norm='Linf', eps=8/255, version='custom',
                         attacks_to_run=['apgd-ce'], device='cpu', log_path={str(log)!r})
        assert isinstance(adv.apgd, ap.APGDAttack)          # the attack is pyautoattack's own
        adv.apgd.n_iter = 10
        x_adv = adv.run_standard_evaluation(x, y, bs=16, state_path=None)
        assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape
        assert (x_adv - x).abs().max() <= 8/255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            robust = (model(x_adv).argmax(1) == y).float().mean().item()
        x2, y2 = adv.run_standard_evaluation(x, y, bs=16, return_labels=True)
        print(robust, y2.shape[0])
    """)
    robust, n = out.strip().splitlines()[-1].split()
    assert float(robust) < 1.0 and int(n) == 32  # the attack broke some points
    assert "robust accuracy" in out              # verbose=True prints progress, as the official
    assert "apgd-ce" in log.read_text()          # log_path receives the log


@pytest.mark.parametrize("version", ["standard", "plus", "rand"])
def test_versions_set_the_official_attack_lists(version):
    out = run_fresh(f"""
        import torch.nn as nn
        from autoattack import AutoAttack
        adv = AutoAttack(nn.Linear(2, 2), norm='Linf', eps=0.1, version={version!r}, device='cpu',
                         verbose=False)
        print(','.join(adv.attacks_to_run))
    """)
    expected = {"standard": "apgd-ce,apgd-t,fab-t,square",
                "plus": "apgd-ce,apgd-dlr,fab,square,apgd-t,fab-t",
                "rand": "apgd-ce,apgd-dlr"}[version]
    assert out.strip() == expected
