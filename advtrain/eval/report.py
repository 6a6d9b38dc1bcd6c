"""One table of every RobustBench card in a folder: Markdown and a self-contained HTML page.

``advtrain report model_info/`` finds every card (``<dataset>/<threat model>/<name>.json``, at any
depth) and its advtrain sidecar (``<name>.advtrain.json``) and renders

- ``report.md``: one row per card, sorted by robust accuracy (AutoAttack, or corruptions accuracy
  for corruptions cards), highest first;
- ``report.html``: the same table, sortable by clicking a header, with the robustness and
  convergence curves of ``--eps-sweep`` embedded as base64 images; inline CSS and JS only, so the
  page opens offline and can be mailed as one file.

A row is marked *partial* when its sidecar says the evaluation was not standard AutoAttack on the
full test set (another version or attack list, or fewer than 10,000 images); a card without a
sidecar (e.g. RobustBench's own) is marked "no sidecar": nothing says how it was measured.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import List, Optional

from advtrain.eval.cards import CORRUPTIONS, protocol_test_images
from advtrain.eval.cards import TEST_IMAGES as FULL_N  # a run on fewer test images is partial
from advtrain.errors import InputError
from advtrain.io.names import SIDECAR_SUFFIX


def find_cards(root) -> List[Path]:
    """Every card under ``root`` (sidecars excluded), in path order; one-line error when none."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a directory; give the folder of the cards, e.g. "
                         "advtrain report model_info")
    cards = sorted(p for p in root.rglob("*.json") if not p.name.endswith(SIDECAR_SUFFIX))
    if not cards:
        raise InputError(f"{root} holds no result cards (*.json); write some with advtrain eval "
                         f"--out {root}")
    return cards


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({str(e).splitlines()[0]}); fix or remove "
                         "the file") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} holds a JSON {type(data).__name__}, not a card object; remove it")
    return data


def _percent(card: dict, key: str, path: Path) -> Optional[float]:
    """``card[key]`` as a percentage; None when absent; a value that is not one (NaN, 1e999, -5,
    text) is refused in one line rather than put in the table as a number."""
    value = card.get(key)
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not 0.0 <= number <= 100.0:  # NaN fails both comparisons
        raise InputError(f"{path}: {key} = {str(value)[:40]!r} is not a percentage in [0, 100]; "
                         "fix or remove the card")
    return number


def _curves(side: Optional[dict], side_path: Path) -> dict:
    """The ``--eps-sweep`` images a sidecar names: plain ``.png`` file names beside the card (a
    path elsewhere would embed any readable file in a page meant to be mailed)."""
    sweep = (side or {}).get("eps_sweep")
    files = sweep.get("files") if isinstance(sweep, dict) else None
    if sweep is None or files is None:
        return {}
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise InputError(f"{side_path}: eps_sweep.files must map kinds to file names; write the "
                         "sidecar again with advtrain eval --eps-sweep, or remove it")
    images = {}
    for kind, name in files.items():
        if not str(kind).endswith("png"):
            continue
        if Path(name).name != name or name in ("", ".", "..") or not name.endswith(".png"):
            raise InputError(f"{side_path}: eps_sweep.files[{kind!r}] = {name[:60]!r} is not a "
                             ".png file name beside the card; remove the entry or the sidecar")
        images[kind] = side_path.parent / name
    return images


def partial_reason(side: Optional[dict], threat_model: str) -> str:
    """'' for a full standard evaluation, else why it is not one (from the sidecar)."""
    if side is None:
        return "no sidecar"
    if threat_model == CORRUPTIONS:
        n = side.get("n_per_block")
        return "" if n == FULL_N else f"{n} images per corruption and severity"
    n, protocol = side.get("n_ex"), protocol_test_images(str(side.get("dataset")))
    short = (f"standard AutoAttack on {n} of {protocol} test images" if isinstance(n, int)
             and protocol is not None and n < protocol else "")
    if "full_standard" in side:  # the sidecar's own verdict and description (advtrain.eval.cards)
        if side["full_standard"] is True:  # "no" or 1 is not advtrain's verdict: partial
            return short  # a sidecar written before issue 24 judged "full" by the file's size
        return str(side.get("evaluation") or "not full standard")
    why = []
    if side.get("version") not in (None, "standard"):
        attacks = side.get("attacks")
        why.append(", ".join(map(str, attacks)) if isinstance(attacks, list) else str(side.get("version")))
    n = side.get("n_ex")
    if isinstance(n, int) and n < FULL_N:
        why.append(f"{n} images")
    return "; ".join(why)


def card_row(path: Path, root: Path) -> dict:
    """One table row from a card and, when present, its sidecar."""
    card = read_json(path)
    side_path = path.with_name(path.stem + SIDECAR_SUFFIX)
    side = read_json(side_path) if side_path.is_file() else None
    threat = (side or {}).get("threat_model") or path.parent.name
    acc_key = "corruptions_acc" if "corruptions_acc" in card else "autoattack_acc"
    robust, clean = _percent(card, acc_key, path), _percent(card, "clean_acc", path)
    if robust is None and clean is None:
        raise InputError(f"{path} has neither clean_acc nor {acc_key}; it is not a RobustBench "
                         "card (remove it or point report at the cards' folder)")
    images = _curves(side, side_path)
    return {"card": str(path.relative_to(root)), "name": path.stem,
            "dataset": card.get("dataset") or (side or {}).get("dataset", ""),
            "threat_model": threat, "eps": str(card.get("eps") or ""),
            "architecture": card.get("architecture", ""), "clean": clean,
            "robust": robust, "metric": acc_key, "partial": partial_reason(side, threat),
            "footnote": card.get("footnote") or "", "images": images}


def collect(root) -> List[dict]:
    """Rows of every card under ``root``, robust accuracy descending (missing last)."""
    root = Path(root)
    rows = [card_row(p, root) for p in find_cards(root)]
    return sorted(rows, key=lambda r: (r["robust"] is None, -(r["robust"] or 0.0), r["name"]))


COLUMNS = (("name", "model"), ("dataset", "dataset"), ("threat_model", "threat model"),
           ("eps", "eps"), ("architecture", "architecture"), ("clean", "clean %"),
           ("robust", "robust % (AA / corruptions)"), ("partial", "partial evaluation"))


def _cell(row: dict, key: str) -> str:
    value = row[key]
    if key in ("clean", "robust"):
        return "" if value is None else f"{value:.2f}"
    if key == "partial":
        return f"partial: {value}" if value else "full"
    return str(value)


def to_markdown(rows: List[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "|".join("---:" if k in ("clean", "robust") else "---"
                            for k, _ in COLUMNS) + "|"]
    for row in rows:
        cells = [_cell(row, k).replace("|", "\\|") for k, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    n_partial = sum(bool(r["partial"]) for r in rows)
    lines += ["", f"{len(rows)} cards, sorted by robust accuracy; {n_partial} marked partial "
                  "(not standard AutoAttack on the full test set, or no sidecar to say so)."]
    return "\n".join(lines) + "\n"


def _img(path: Path) -> str:
    if not path.is_file():
        return f"<span class=miss>missing {html.escape(path.name)}</span>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


_STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse}
th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}th{background:#eee;cursor:pointer}
td.num{text-align:right}tr.partial td{background:#fff6e0}img{height:160px}.miss{color:#a00}"""
_SCRIPT = """function sortBy(c){const t=document.getElementById('cards'),b=t.tBodies[0];
const r=[...b.rows],d=t.dataset.col==c&&t.dataset.dir=='desc'?'asc':'desc';
const v=x=>{const s=x.cells[c].dataset.v??x.cells[c].textContent,f=parseFloat(s);
return isNaN(f)?s.toLowerCase():f};
r.sort((a,z)=>{const p=v(a),q=v(z);const o=p<q?-1:p>q?1:0;return d=='asc'?o:-o});
r.forEach(x=>b.appendChild(x));t.dataset.col=c;t.dataset.dir=d}"""


def to_html(rows: List[dict], title: str) -> str:
    head = "".join(f'<th onclick="sortBy({i})">{html.escape(t)}</th>'
                   for i, (_, t) in enumerate(COLUMNS + (("curves", "curves"),)))
    body = []
    for row in rows:
        tds = []
        for key, _ in COLUMNS:
            num = key in ("clean", "robust")
            sort = f' data-v="{-1 if row[key] is None else row[key]}"' if num else ""
            cls = " class=num" if num else ""
            tds.append(f"<td{cls}{sort}>{html.escape(_cell(row, key))}</td>")
        tds.append("<td>" + "".join(_img(p) for p in row["images"].values()) + "</td>")
        body.append(f"<tr{' class=partial' if row['partial'] else ''}>{''.join(tds)}</tr>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Click a header to sort. Rows shaded: partial "
            "evaluations.</p>"
            f'<table id=cards data-col=6 data-dir=desc><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></body></html>\n")


def write_report(root, out_prefix=None) -> tuple:
    """Write ``<out_prefix>.md`` and ``.html`` (default ``<root>/report``); return their paths."""
    from advtrain.io.atomic import commit_files

    rows = collect(root)
    prefix = Path(out_prefix) if out_prefix else Path(root) / "report"
    md, page = prefix.with_name(prefix.name + ".md"), prefix.with_name(prefix.name + ".html")
    commit_files({md: to_markdown(rows), page: to_html(rows, f"advtrain report: {root}")},
                 primary=page)
    return md, page, rows
