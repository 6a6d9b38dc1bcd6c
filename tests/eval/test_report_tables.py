"""Issue 24.2: the report is one table per dataset and threat model with RobustBench's published
fields; partial evaluations are marked by what ran, cards without a sidecar as published cards;
text columns sort A to Z first with an arrow showing the direction. Checked on the parsed HTML
(stdlib parser) and, when Chromium is installed, by clicking the headers in headless Chromium."""
from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from advtrain.eval.report import write_report


def _card(folder, stem, side=None, **card):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(card))
    if side is not None:
        (folder / f"{stem}.advtrain.json").write_text(json.dumps(side))


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "model_info"
    linf = root / "cifar10" / "Linf"
    full = {"dataset": "cifar10", "threat_model": "Linf", "full_standard": True, "n_ex": 10000}
    _card(linf, "Bravo", full, name="Bravo paper", dataset="cifar10", venue="ICML 2021",
          architecture="WideResNet-28-10", eps="8/255", clean_acc="80.00", autoattack_acc="60.00",
          link="https://example.org/bravo", unreliable=False)
    # RobustBench's Gowal2020Uncovering_70_16 values: external (57.14) below AutoAttack (57.20)
    _card(linf, "Alpha", None, name="alpha paper", dataset="cifar10", venue="arXiv, Oct 2020",
          architecture="WideResNet-70-16", eps="8/255", clean_acc="85.29", autoattack_acc="57.20",
          external="57.14", footnote="57.14% robust accuracy is due to the original evaluation",
          link="javascript:alert(1)", unreliable=True)
    _card(linf, "Charlie", {"dataset": "cifar10", "threat_model": "Linf", "full_standard": False,
                            "evaluation": "AutoAttack custom (apgd-ce), on 50 of 10000 test images"},
          name="Charlie", dataset="cifar10", venue="", architecture="ResNet-18", eps="8/255",
          clean_acc="70.00", autoattack_acc="58.00")
    # corruptions accuracy is higher than every AutoAttack one: it must stay in its own table
    _card(root / "cifar10" / "corruptions", "Corr", {"dataset": "cifar10",
                                                     "threat_model": "corruptions",
                                                     "n_per_block": 10000},
          name="Corr", dataset="cifar10", architecture="WideResNet-40-2", clean_acc="94.00",
          corruptions_acc="88.82")
    _card(root / "cifar100" / "Linf", "Delta", {"dataset": "cifar100", "threat_model": "Linf",
                                                "full_standard": True, "n_ex": 10000},
          name="Delta", dataset="cifar100", architecture="WideResNet-70-16", eps="8/255",
          clean_acc="70.00", autoattack_acc="40.00")
    return root


class _Tables(HTMLParser):
    """The page's tables: group, header cells (text + attributes) and rows (class, cell texts,
    links)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell, self._in = [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"group": a.get("data-group"), "head": [], "rows": []})
        elif tag == "thead":
            self._in = "head"
        elif tag == "tbody":
            self._in = "body"
        elif tag == "tr" and self._in == "body":
            self.tables[-1]["rows"].append({"class": a.get("class"), "cells": [], "links": []})
        elif tag in ("th", "td"):
            self._cell = {"text": "", **a}
        elif tag == "a" and self._cell is not None:
            self.tables[-1]["rows"][-1]["links"].append(a.get("href"))
        elif tag in ("script", "link", "iframe") and (a.get("src") or a.get("href")):
            raise AssertionError(f"external resource {tag} {a}")
        elif tag == "img":
            assert a["src"].startswith("data:image/png;base64,")

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "th":
            self.tables[-1]["head"].append(self._cell)
            self._cell = None
        elif tag == "td":
            self.tables[-1]["rows"][-1]["cells"].append(self._cell["text"])
            self._cell = None


def _parse(page: str):
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def test_grouped_tables_with_published_fields(root):
    _, page, _ = write_report(root)
    tables = _parse(page.read_text())
    assert [t["group"] for t in tables] == ["cifar10/Linf", "cifar10/corruptions", "cifar100/Linf"]
    linf, corr, c100 = tables
    head = [h["text"].rstrip("▲▼") for h in linf["head"]]
    for title in ("model", "link", "venue", "AutoAttack %", "best known % (external)", "unreliable",
                  "evaluation", "footnote"):
        assert title in head
    col = {t: i for i, t in enumerate(head)}
    # RobustBench's order: best known robust accuracy (external when given), highest first
    assert [r["cells"][0] for r in linf["rows"]] == ["Bravo paper", "Charlie", "alpha paper"]
    rows = {r["cells"][0]: r for r in linf["rows"]}
    alpha, bravo, charlie = rows["alpha paper"], rows["Bravo paper"], rows["Charlie"]
    assert alpha["cells"][col["AutoAttack %"]] == "57.20"
    assert alpha["cells"][col["best known % (external)"]] == "57.14"  # min(57.20, 57.14)
    assert bravo["cells"][col["best known % (external)"]] == "60.00"
    assert alpha["cells"][col["unreliable"]] == "yes" and bravo["cells"][col["unreliable"]] == "no"
    assert charlie["cells"][col["unreliable"]] == "unknown"
    assert alpha["cells"][col["evaluation"]] == "published card, no advtrain sidecar"
    assert alpha["class"] == "published" and bravo["class"] is None
    assert charlie["class"] == "partial"
    assert charlie["cells"][col["evaluation"]] == ("partial: AutoAttack custom (apgd-ce), on 50 of "
                                                   "10000 test images")
    assert bravo["cells"][col["evaluation"]] == "full" and bravo["cells"][col["venue"]] == "ICML 2021"
    assert "original evaluation" in alpha["cells"][col["footnote"]]
    assert bravo["links"] == ["https://example.org/bravo"] and alpha["links"] == []  # no javascript:
    assert bravo["cells"][col["link"]] == "https://example.org/bravo" and alpha["cells"][col["link"]] == ""
    # corruptions: own table, own column, never beside AutoAttack numbers
    corr_head = [h["text"].rstrip("▲▼") for h in corr["head"]]
    assert "corruptions %" in corr_head and "AutoAttack %" not in corr_head
    assert [r["cells"][0] for r in corr["rows"]] == ["Corr"]
    assert [r["cells"][0] for r in c100["rows"]] == ["Delta"]
    # the first sort: best known, highest first, its arrow shown; text columns sort A-Z first
    best = linf["head"][col["best known % (external)"]]
    assert best["aria-sort"] == "descending" and best["text"].endswith("▼")
    assert linf["head"][col["model"]]["data-kind"] == "text"
    assert linf["head"][col["clean %"]]["data-kind"] == "num"


def test_markdown_has_one_table_per_group(root):
    md, _, _ = write_report(root)
    text = md.read_text()
    heads = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert heads == ["## cifar10, Linf", "## cifar10, corruptions", "## cifar100, Linf"]
    assert "| Bravo paper | [paper](https://example.org/bravo) |" in text and "javascript:" not in text


_CLICKS = """<script>
const out={};
for(const t of document.querySelectorAll('table.cards')){
  const heads=[...t.tHead.rows[0].cells], names=()=>[...t.tBodies[0].rows].map(r=>r.cells[0].textContent);
  const h=n=>heads.find(x=>x.textContent.replace(/[\\u25B2\\u25BC]/g,'')==n);
  const steps=[];
  for(const n of ['model','model','clean %']){
    h(n).click();
    steps.push({col:n,names:names(),arrow:h(n).querySelector('.arrow').textContent,
                sort:h(n).getAttribute('aria-sort'),
                others:heads.filter(x=>x!==h(n)).map(x=>x.querySelector('.arrow').textContent).join('')});
  }
  out[t.dataset.group]=steps;
}
document.body.insertAdjacentHTML('beforeend','<pre id=out>'+JSON.stringify(out)+'</pre>');
</script></body>"""


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
        "google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_sorting_in_headless_chromium(root, tmp_path):
    _, page, _ = write_report(root)
    driven = tmp_path / "driven.html"
    driven.write_text(page.read_text().replace("</body>", _CLICKS))
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                           "--dump-dom", driven.as_uri()],
                          capture_output=True, text=True, timeout=60)
    dom = proc.stdout
    assert '<pre id="out">' in dom, proc.stderr[-2000:]
    import html as _html

    out = json.loads(_html.unescape(dom.split('<pre id="out">')[1].split("</pre>")[0]))
    first, again, clean = out["cifar10/Linf"]
    # text: A to Z first (case-insensitive), arrow up; a second click reverses, arrow down
    assert first["names"] == ["alpha paper", "Bravo paper", "Charlie"] and first["arrow"] == "▲"
    assert first["sort"] == "ascending" and first["others"] == ""
    assert again["names"] == ["Charlie", "Bravo paper", "alpha paper"] and again["arrow"] == "▼"
    # numbers: highest first (85.29 > 80.00 > 70.00)
    assert clean["names"] == ["alpha paper", "Bravo paper", "Charlie"] and clean["arrow"] == "▼"
    assert clean["sort"] == "descending" and clean["others"] == ""
    assert [s["names"] for s in out["cifar10/corruptions"]] == [["Corr"]] * 3  # its own table
