"""The published rows a config may cite with ``paper_row`` (SPEC section 7), and what each reports."""
from __future__ import annotations

from typing import Dict

#: paper_row -> (setting, clean %, AutoAttack %); None where the paper reports no number
PAPER_ROWS: Dict[int, tuple] = {
    1: ("IKL-AT CIFAR-10 WRN-34-10", 85.31, 57.09),
    2: ("IKL-AT CIFAR-100 WRN-34-10 (a3 b20 T4)", 66.51, 31.43),
    3: ("IKL-AT CIFAR-100 WRN-34-10 (a4 b20 T2)", 64.08, 31.65),
    4: ("GKL-AT CIFAR-100 WRN-34-10", 65.76, 31.91),
    5: ("IKL-AT CIFAR-100 WRN-34-10 AutoAugment", 65.93, 32.52),
    6: ("IKL-AT CIFAR-10 + 1M EDM WRN-28-10", 90.75, 63.54),
    7: ("IKL-AT CIFAR-10 + 20M EDM WRN-28-10", 92.16, 67.73),
    8: ("IKL-AT CIFAR-100 + 1M EDM WRN-28-10", 68.99, 35.89),
    9: ("IKL-AT CIFAR-100 + 50M EDM WRN-28-10", 73.85, 39.18),
    10: ("GKL-AT CIFAR-100 + 50M EDM WRN-28-10", 73.65, 39.37),
    11: ("GKL-AT CIFAR-100 gamma 0.4 (v2 script)", None, None),
    12: ("GKL-AT CIFAR-10 gamma 0.2 (v2 script)", None, None),
    13: ("GKL-AT CIFAR-10 AutoAugment (v2 script)", None, None),
    14: ("TRADES-AWP CIFAR-100 WRN-34-10", 60.38, 28.86),
    15: ("LBGAT beta 0 CIFAR-100 WRN-34-10 (eps 0.031)", 70.25, 27.16),
    16: ("LBGAT beta 6 CIFAR-100 WRN-34-10 (eps 0.031)", 60.64, 29.33),
    17: ("LBGAT beta 9 + AWP CIFAR-100 WRN-34-10", 62.99, 31.20),
    18: ("TRADES-AWP CIFAR-10 WRN-34-10", 85.36, 56.17),
}
