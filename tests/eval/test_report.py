"""``advtrain report DIR``: every card and sidecar under DIR as one Markdown + self-contained HTML
table, sorted by robust accuracy, partial evaluations marked; bad input is one line, exit 2."""
from __future__ import annotations

import base64
import json
import re

import pytest

from advtrain.cli import main

PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
    "RU5ErkJggg==")


def _card(folder, name, clean, robust, side=None, key="autoattack_acc", **extra):
    folder.mkdir(parents=True, exist_ok=True)
    card = {"name": name, "dataset": "cifar10", "architecture": "WideResNet-10-1",
            "eps": "8/255", "clean_acc": clean, key: robust, **extra}
    (folder / f"{name}.json").write_text(json.dumps(card))
    if side is not None:
        (folder / f"{name}.advtrain.json").write_text(json.dumps(side))


@pytest.fixture
def cards(tmp_path):
    root = tmp_path / "model_info"
    linf = root / "cifar10" / "Linf"
    _card(linf, "Full", "80.00", "50.00", {"version": "standard", "n_ex": 10000,
                                           "threat_model": "Linf"})
    _card(linf, "Quick", "60.00", "55.50",
          {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_ex": 100,
           "threat_model": "Linf",
           "eps_sweep": {"files": {"csv": "Quick.eps_sweep.csv", "png": "Quick.eps_sweep.png",
                                   "convergence_png": "Quick.convergence.png"}}})
    (linf / "Quick.eps_sweep.png").write_bytes(PNG)
    (linf / "Quick.convergence.png").write_bytes(PNG)
    _card(linf, "TheirOwn", "90.00", "9.75")  # RobustBench's card: no sidecar
    _card(root / "cifar100" / "L2", "Verdict", "50.00", "20.00",  # a sidecar with its own verdict
          {"full_standard": False,
           "evaluation": "AutoAttack standard, on 500 of 10000 test images"}, dataset="cifar100")
    _card(root / "cifar10" / "corruptions", "Corr", "91.00", "70.25",
          {"threat_model": "corruptions", "n_per_block": 10000}, key="corruptions_acc")
    return root


def test_markdown_sorted_by_robust_accuracy_and_partial_marked(cards, capsys):
    assert main(["report", str(cards)]) == 0
    assert "5 cards (2 partial, 1 published without an advtrain sidecar)" in capsys.readouterr().out
    md = (cards / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| model |")]
    names = [r.split("|")[1].strip() for r in rows]
    # one table per dataset and threat model (cifar10 Linf, cifar10 corruptions, cifar100 L2)
    assert names == ["Quick", "Full", "TheirOwn", "Corr", "Verdict"]  # 55.50 > 50.00 > 9.75
    assert md.index("## cifar10, Linf") < md.index("## cifar10, corruptions") < md.index(
        "## cifar100, L2")
    by_name = dict(zip(names, rows))
    assert "partial: apgd-ce, apgd-t; 100 images" in by_name["Quick"]
    assert "| full |" in by_name["Full"] and "| full |" in by_name["Corr"]
    assert "| published card, no advtrain sidecar |" in by_name["TheirOwn"]
    assert "partial: AutoAttack standard, on 500 of 10000 test images" in by_name["Verdict"]
    assert "| 55.50 |" in by_name["Quick"] and "| 60.00 |" in by_name["Quick"]


def test_html_self_contained_with_embedded_curves(cards):
    assert main(["report", str(cards), "--out", str(cards.parent / "out" / "table")]) == 0
    page = (cards.parent / "out" / "table.html").read_text()
    assert page.count("data:image/png;base64," + base64.b64encode(PNG).decode()) == 2
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched from elsewhere
    assert not re.search(r"<(link|iframe|object|embed)\b|<script [^>]*src", page)
    assert "<script>" in page and "sortBy(this)" in page and "<style>" in page
    assert page.index(">Quick<") < page.index(">TheirOwn<") < page.index(">Corr<")
    assert page.count('class=partial') == 2 and page.count('class=published') == 1


@pytest.mark.parametrize("case,needle", [
    ("missing", "is not a directory"), ("empty", "holds no result cards"),
    ("malformed", "is not valid JSON"), ("list", "not a card object"),
    ("notcard", "not a RobustBench card")])
def test_bad_input_one_line_exit_2(tmp_path, capsys, case, needle):
    root = tmp_path / "m"
    if case != "missing":
        root.mkdir()
    body = {"malformed": "{\"name\": ", "list": "[1, 2]", "notcard": "{\"name\": \"x\"}"}
    if case in body:
        (root / "bad.json").write_text(body[case])
    assert main(["report", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert err.startswith("advtrain report: error:")
    assert not (root / "report.md").exists()


def test_report_output_that_is_a_card_is_refused(cards, capsys):
    """The one output-path check: ``report.md`` a symlink to a card would replace what it reads."""
    full = cards / "cifar10" / "Linf" / "Full.json"
    before = full.read_bytes()
    (cards / "report.md").symlink_to(full)
    assert main(["report", str(cards)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the same file as card" in err
    assert full.read_bytes() == before and not (cards / "report.html").exists()
