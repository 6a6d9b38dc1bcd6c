"""CPU tests of bench/rank_objectives.py's paired comparison: the exact McNemar p-value against an
independent float64 expression (log-gamma binomial terms), and the discordant-pair counts."""
from __future__ import annotations

import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import rank_objectives as R  # noqa: E402


def p_float64(b: int, c: int) -> float:
    """Two-sided exact McNemar: 2·P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1; each term
    exp(lgamma(n+1) − lgamma(i+1) − lgamma(n−i+1) − n·ln 2) in float64."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2))
               for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("b,c", [(0, 5), (5, 0), (3, 7), (10, 10), (1, 30), (40, 62), (120, 171), (0, 0)])
def test_mcnemar_exact_matches_float64_binomial(b, c):
    assert R.mcnemar_exact(b, c) == pytest.approx(p_float64(b, c), rel=1e-9, abs=1e-300)


def test_mcnemar_known_values():
    assert R.mcnemar_exact(0, 5) == 2 / 32  # all five discordant pairs one way
    assert R.mcnemar_exact(4, 4) == 1.0
    assert R.mcnemar_exact(0, 0) == 1.0


def test_paired_counts_discordant_images():
    def res(clean, pgd, aa):
        return {k: {"per_image": v} for k, v in (("clean", clean), ("pgd", pgd), ("aa", aa))}

    results = {"pgd_at": res([1, 1, 0, 0, 1, 1], [1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]),
               "clean": res([1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]),
               "fgsm_rs": res([1, 1, 1, 0, 1, 1], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0])}
    rows = R.paired(results)
    assert [(r["a"], r["b"]) for r in rows] == [("pgd_at", "clean"), ("pgd_at", "fgsm_rs"),
                                               ("clean", "fgsm_rs")]
    first = rows[0]
    assert (first["clean"]["only_first"], first["clean"]["only_second"]) == (1, 2)
    assert (first["pgd"]["only_first"], first["pgd"]["only_second"]) == (2, 0)
    assert first["pgd"]["diff"] == pytest.approx(2 / 6)
    assert first["pgd"]["p"] == pytest.approx(p_float64(2, 0))
    assert rows[1]["aa"]["only_first"] == 0 and rows[1]["aa"]["p"] == 1.0
