"""``advtrain report DIR``: every card and sidecar under DIR as one Markdown + self-contained HTML
table, sorted by robust accuracy, partial evaluations marked; bad input is one line, exit 2."""
from __future__ import annotations

import base64
import json
import os
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
    # cells are escaped for Markdown (report.md_escape); compare the text a reader sees
    by_name = {n: re.sub(r"\\(.)", r"\1", r) for n, r in zip(names, rows)}
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


# ----------------------------------------------------------------------------- DIR is untrusted (issue 23)
def _report_fails(root, capsys, needle):
    """``advtrain report root`` refuses in one line naming ``needle``; nothing written."""
    import signal

    signal.alarm(20)  # a FIFO read would block forever: fail the test instead of hanging
    try:
        rc = main(["report", str(root)])
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("advtrain report: error:"), err
    assert needle in err, err
    assert not (root / "report.md").exists() and not (root / "report.html").exists()
    return err


def _sweep_side(png_name="X.eps_sweep.png"):
    return {"version": "standard", "n_ex": 10000, "threat_model": "Linf",
            "eps_sweep": {"files": {"png": png_name}}}


def test_curve_linked_outside_dir_refused(tmp_path, capsys):
    """A curve named like a file beside the card but a real symlink to a file outside DIR."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)  # even a real PNG: it is not the sender's to embed
    root = tmp_path / "mi"
    linf = root / "cifar10" / "Linf"
    _card(linf, "X", "80.00", "50.00", _sweep_side())
    os.symlink(secret, linf / "X.eps_sweep.png")
    err = _report_fails(root, capsys, "outside")
    assert "secret.png" in err


def test_curve_linked_inside_dir_is_read(tmp_path):
    """A link that stays inside DIR is fine: it resolves to a file the sender sent."""
    root = tmp_path / "mi"
    linf = root / "cifar10" / "Linf"
    _card(linf, "X", "80.00", "50.00", _sweep_side())
    (root / "curves").mkdir()
    (root / "curves" / "c.png").write_bytes(PNG)
    os.symlink(root / "curves" / "c.png", linf / "X.eps_sweep.png")
    assert main(["report", str(root)]) == 0
    assert base64.b64encode(PNG).decode() in (root / "report.html").read_text()


def test_card_linked_outside_dir_refused(tmp_path, capsys):
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"clean_acc": "1", "autoattack_acc": "1"}))
    root = tmp_path / "mi"
    (root / "cifar10" / "Linf").mkdir(parents=True)
    os.symlink(outside, root / "cifar10" / "Linf" / "A.json")
    _report_fails(root, capsys, "outside")


def test_linked_folder_not_entered(tmp_path, capsys):
    """A folder link (here to a folder of cards outside DIR) is not walked into."""
    outside = tmp_path / "theirs"
    _card(outside, "Out", "80.00", "50.00")
    root = tmp_path / "mi"
    _card(root / "cifar10" / "Linf", "In", "70.00", "40.00")
    os.symlink(outside, root / "cifar10" / "more")
    assert main(["report", str(root)]) == 0
    md = (root / "report.md").read_text()
    assert "In" in md and "Out" not in md


@pytest.mark.parametrize("which", ["card", "sidecar", "curve"])
def test_fifo_refused_without_hanging(tmp_path, capsys, which):
    root = tmp_path / "mi"
    linf = root / "cifar10" / "Linf"
    linf.mkdir(parents=True)
    if which == "card":
        os.mkfifo(linf / "F.json")
    else:
        _card(linf, "F", "80.00", "50.00", _sweep_side("F.eps_sweep.png"))
        target = linf / ("F.advtrain.json" if which == "sidecar" else "F.eps_sweep.png")
        target.unlink(missing_ok=True)
        os.mkfifo(target)
    _report_fails(root, capsys, "is not a regular file")


def test_directory_named_like_a_card_refused(tmp_path, capsys):
    root = tmp_path / "mi"
    _card(root / "cifar10" / "Linf", "A", "80.00", "50.00", {"n_ex": 10000})
    (root / "cifar10" / "Linf" / "A.advtrain.json").unlink()
    (root / "cifar10" / "Linf" / "A.advtrain.json").mkdir()
    _report_fails(root, capsys, "is not a regular file")


def test_size_depth_count_limits(tmp_path, capsys, monkeypatch):
    from advtrain.eval import report

    root = tmp_path / "big"
    linf = root / "cifar10" / "Linf"
    _card(linf, "Big", "80.00", "50.00", padding="x" * (report.MAX_JSON_BYTES + 1))
    _report_fails(root, capsys, "more than a card may")

    deep = tmp_path / "deep"
    folder = deep.joinpath(*["d"] * (report.MAX_DEPTH + 1))
    _card(folder, "Deep", "80.00", "50.00")
    _report_fails(deep, capsys, f"more than {report.MAX_DEPTH} folders below")

    many = tmp_path / "many"
    monkeypatch.setattr(report, "MAX_CARDS", 3)
    for i in range(4):
        _card(many / "cifar10" / "Linf", f"M{i}", "80.00", "50.00")
    _report_fails(many, capsys, "more than 3 cards")


def test_curve_that_is_not_a_png_refused(tmp_path, capsys):
    root = tmp_path / "mi"
    linf = root / "cifar10" / "Linf"
    _card(linf, "X", "80.00", "50.00", _sweep_side())
    (linf / "X.eps_sweep.png").write_text("<script>alert(1)</script>")
    _report_fails(root, capsys, "is not a PNG image")


@pytest.mark.parametrize("value", [-1, 10 ** 12, "10000", 1.5, True])
def test_sidecar_counts_checked(tmp_path, capsys, value):
    root = tmp_path / "mi"
    _card(root / "cifar10" / "Linf", "X", "80.00", "50.00", {"version": "custom", "n_ex": value})
    _report_fails(root, capsys, "is not an image count")


def test_newline_in_a_field_makes_no_row(tmp_path):
    """Text of the sender's choosing never becomes a row, a link, an image or HTML in report.md."""
    root = tmp_path / "mi"
    injected = "WRN\n| Evil | cifar10 | Linf | 8/255 | x | 99.99 | 99.99 | full |\n"
    _card(root / "cifar10" / "Linf", "X", "80.00", "50.00",
          {"version": "custom", "n_ex": 100, "attacks": ["a\r\nb", "[c](http://evil.example)"]},
          architecture=injected, dataset="cifar10\u2028| x |", eps="![i](http://e/x.png)<img src=x>")
    assert main(["report", str(root)]) == 0
    md = (root / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 3  # header, rule, the one card
    row = table[2]
    from advtrain.eval.report import ATTACK_COLUMNS

    assert row.count(" | ") == len(ATTACK_COLUMNS) - 1  # every injected pipe is escaped
    assert "Evil" in row and "\u2028" not in md and "\r" not in md
    for raw in ("](http", "<img", "![", "www.", "http://"):
        assert raw not in row, raw
    page = (root / "report.html").read_text()
    assert "<img src=x>" not in page and "&lt;img src=x&gt;" in page


def test_a_link_to_a_card_inside_dir_is_one_row(tmp_path):
    root = tmp_path / "mi"
    _card(root / "cifar10" / "Linf", "A", "80.00", "50.00")
    os.symlink(root / "cifar10" / "Linf" / "A.json", root / "cifar10" / "Linf" / "B.json")
    assert main(["report", str(root)]) == 0
    rows = [r for r in (root / "report.md").read_text().splitlines() if r.startswith("| A ")]
    assert len(rows) == 1
