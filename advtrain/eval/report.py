"""Every RobustBench card in a folder as leaderboard tables: Markdown and a self-contained HTML page.

``advtrain report model_info/`` finds every card (``<dataset>/<threat model>/<name>.json``, at any
depth) and its advtrain sidecar (``<name>.advtrain.json``) and renders one table per dataset and
threat model, as RobustBench's leaderboards are (a corruptions accuracy is never sorted with an
AutoAttack one), rows by best known robust accuracy (RobustBench's ``external`` when a card has
one, else AutoAttack's), highest first:

- ``report.md``: the tables under one heading each;
- ``report.html``: the same tables, sortable by clicking a header (numbers highest first, text A to
  Z first, an arrow shows the direction), with the ``--eps-sweep`` curves embedded as base64
  images; inline CSS and JS only, so the page opens offline and can be mailed as one file.

Columns: model, link (the card's ``link`` when it is an http(s) URL, never another scheme), venue,
architecture, eps, clean, AutoAttack, best known (``external``), ``unreliable``, evaluation,
footnote. The evaluation column says
"full" (standard AutoAttack on the protocol's whole test set, from the sidecar), "partial: <what
ran>", or "published card, no advtrain sidecar" (e.g. RobustBench's own cards: measured elsewhere).
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import List, Optional

from advtrain.data.facts import FACTS
from advtrain.eval.cards import CARD_THREAT_MODELS
from advtrain.eval.settings import CORRUPTIONS
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


def partial_reason(side: Optional[dict], threat_model: str, dataset: str = "") -> str:
    """'' for a full standard evaluation, else why it is not one (from the sidecar; a sidecar
    without advtrain's verdict is compared with the test-set size of ``dataset``'s facts row)."""
    if side is None:
        return "no sidecar"
    dataset = dataset or side.get("dataset")
    row = FACTS.get(dataset) if isinstance(dataset, str) else None
    full_n = row.test_images if row is not None else None  # a run on fewer test images is partial
    if threat_model == CORRUPTIONS and "full_standard" not in side:  # written before the one writer
        n = side.get("n_per_block")
        return "" if n == full_n else f"{n} images per corruption and severity"
    n = side.get("n_ex")
    short = (f"standard AutoAttack on {n} of {full_n} test images" if isinstance(n, int)
             and full_n is not None and n < full_n and threat_model != CORRUPTIONS else "")
    if "full_standard" in side:  # the sidecar's own verdict and description (advtrain.eval.cards)
        if side["full_standard"] is True:  # "no" or 1 is not advtrain's verdict: partial
            return short  # a sidecar written before issue 24 judged "full" by the file's size
        return str(side.get("evaluation") or "not full standard")
    why = []
    if side.get("version") not in (None, "standard"):
        attacks = side.get("attacks")
        why.append(", ".join(map(str, attacks)) if isinstance(attacks, list) else str(side.get("version")))
    n = side.get("n_ex")
    if isinstance(n, int) and (full_n is None or n < full_n):
        why.append(f"{n} images")
    return "; ".join(why)


#: a card without an advtrain sidecar: a published card (e.g. RobustBench's), measured elsewhere
PUBLISHED = "published card, no advtrain sidecar"


def _flag(card: dict, key: str) -> Optional[bool]:
    """A card's boolean field (``unreliable``, ``additional_data``); None when absent or not a bool."""
    value = card.get(key)
    return value if isinstance(value, bool) else None


def _link(value) -> str:
    """The card's ``link`` when it is one http(s) URL, else '' (a ``javascript:`` or any other
    scheme, whitespace inside, or over 2,000 characters is not shown: the page is shared)."""
    text = str(value or "").strip()
    ok = (text.lower().startswith(("https://", "http://")) and len(text) <= 2000
          and not any(c.isspace() for c in text))
    return text if ok else ""


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
    external = _percent(card, "external", path) if acc_key == "autoattack_acc" else None
    best = min(x for x in (robust, external) if x is not None) if robust is not None else external
    images = _curves(side, side_path)
    dataset = card.get("dataset") or (side or {}).get("dataset") or path.parent.parent.name
    partial = partial_reason(side, threat, dataset) if side is not None else ""
    status = "published" if side is None else "partial" if partial else "full"
    return {"card": str(path.relative_to(root)), "name": path.stem,
            "title": str(card.get("name") or path.stem),
            "dataset": card.get("dataset") or (side or {}).get("dataset", ""),
            "threat_model": threat, "eps": str(card.get("eps") or ""),
            "architecture": card.get("architecture", ""), "clean": clean,
            "robust": robust, "external": external, "best": best, "metric": acc_key,
            "partial": partial, "status": status,
            "evaluation": {"full": "full", "published": PUBLISHED}.get(status, f"partial: {partial}"),
            "venue": str(card.get("venue") or ""), "link": _link(card.get("link")),
            "unreliable": _flag(card, "unreliable"),
            "footnote": str(card.get("footnote") or ""), "images": images}


def _sort_key(row: dict) -> tuple:
    """RobustBench's leaderboard order: best known robust accuracy (``external`` when the card has
    one, else AutoAttack's; corruptions accuracy for corruptions cards), highest first."""
    return (row["best"] is None, -(row["best"] or 0.0), row["name"])


def collect(root) -> List[dict]:
    """Rows of every card under ``root``, grouped (:func:`group_rows`) and, within a group, by best
    known robust accuracy descending (missing last)."""
    root = Path(root)
    rows = [card_row(p, root) for p in find_cards(root)]
    return [r for _, group in group_rows(rows) for r in group]


def group_rows(rows: List[dict]) -> list:
    """``[((dataset, threat_model), rows), ...]``: one table per dataset and threat model, as
    RobustBench's leaderboards are (an AutoAttack accuracy is never sorted with a corruptions one);
    datasets in name order, threat models in :data:`advtrain.eval.cards.CARD_THREAT_MODELS` order."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((str(row["dataset"]), str(row["threat_model"])), []).append(row)
    order = {t: i for i, t in enumerate(CARD_THREAT_MODELS)}
    keys = sorted(groups, key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))
    return [(k, sorted(groups[k], key=_sort_key)) for k in keys]


#: (key, title, kind) of the columns of an attack table; kind "num" sorts numbers (highest first on
#: the first click), "text" sorts text (A to Z first)
ATTACK_COLUMNS = (("title", "model", "text"), ("link", "link", "text"), ("venue", "venue", "text"),
                  ("architecture", "architecture", "text"), ("eps", "eps", "text"),
                  ("clean", "clean %", "num"), ("robust", "AutoAttack %", "num"),
                  ("best", "best known % (external)", "num"),
                  ("unreliable", "unreliable", "text"), ("evaluation", "evaluation", "text"),
                  ("footnote", "footnote", "text"))
#: the columns of a corruptions table (no AutoAttack, no external evaluation)
CORRUPTION_COLUMNS = (("title", "model", "text"), ("link", "link", "text"),
                      ("venue", "venue", "text"),
                      ("architecture", "architecture", "text"), ("clean", "clean %", "num"),
                      ("robust", "corruptions %", "num"), ("evaluation", "evaluation", "text"),
                      ("footnote", "footnote", "text"))


def columns_for(threat_model: str) -> tuple:
    return CORRUPTION_COLUMNS if threat_model == CORRUPTIONS else ATTACK_COLUMNS


def _cell(row: dict, key: str) -> str:
    value = row[key]
    if key in ("clean", "robust", "best"):
        return "" if value is None else f"{value:.2f}"
    if key == "unreliable":
        return "unknown" if value is None else "yes" if value else "no"
    return str(value)


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def to_markdown(rows: List[dict]) -> str:
    lines = []
    for (dataset, threat), group in group_rows(rows):
        cols = columns_for(threat)
        lines += [f"## {_md(dataset)}, {_md(threat)}", "",
                  "| " + " | ".join(title for _, title, _ in cols) + " |",
                  "|" + "|".join("---:" if kind == "num" else "---" for _, _, kind in cols) + "|"]
        for row in group:
            cells = [_md(_cell(row, k)) for k, _, _ in cols]
            if row["link"]:
                i = [k for k, _, _ in cols].index("link")
                cells[i] = f"[paper]({row['link'].replace(')', '%29')})"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    n_partial = sum(r["status"] == "partial" for r in rows)
    n_published = sum(r["status"] == "published" for r in rows)
    lines += [f"{len(rows)} cards, one table per dataset and threat model, sorted by best known "
              f"robust accuracy; {n_partial} partial evaluations (marked by what ran), "
              f"{n_published} published cards without an advtrain sidecar."]
    return "\n".join(lines) + "\n"


def _img(path: Path) -> str:
    if not path.is_file():
        return f"<span class=miss>missing {html.escape(path.name)}</span>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


_STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:2em}
th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}th{background:#eee;cursor:pointer;white-space:nowrap}
th .arrow{color:#555;padding-left:.3em}td.num{text-align:right}tr.partial td{background:#fff6e0}
tr.published td{background:#eef4ff}td.note{font-size:12px;max-width:28em}img{height:160px}.miss{color:#a00}"""
#: click a header: a new column sorts numbers highest first and text A to Z first, a second click
#: reverses; the header's arrow (and aria-sort) shows the direction
_SCRIPT = """function sortBy(th){const t=th.closest('table'),b=t.tBodies[0],c=th.cellIndex;
const num=th.dataset.kind=='num';let d=num?'desc':'asc';
if(t.dataset.col==c)d=t.dataset.dir=='asc'?'desc':'asc';
const v=x=>{const e=x.cells[c];return num?parseFloat(e.dataset.v):e.textContent.trim().toLowerCase()};
const r=[...b.rows];r.sort((a,z)=>{const p=v(a),q=v(z);const o=num?p-q:p.localeCompare(q);
return d=='asc'?o:-o});r.forEach(x=>b.appendChild(x));t.dataset.col=c;t.dataset.dir=d;
for(const h of t.tHead.rows[0].cells){const a=h.querySelector('.arrow');
if(h===th){h.setAttribute('aria-sort',d=='asc'?'ascending':'descending');a.textContent=d=='asc'?'\u25B2':'\u25BC'}
else{h.removeAttribute('aria-sort');a.textContent=''}}}"""


def _table(dataset: str, threat: str, group: List[dict]) -> str:
    cols = columns_for(threat)
    first = [k for k, _, _ in cols].index("best" if threat != CORRUPTIONS else "robust")
    head = []
    for i, (_, title, kind) in enumerate(cols):
        sort = ' aria-sort="descending"' if i == first else ""
        arrow = "\u25BC" if i == first else ""
        head.append(f'<th data-kind={kind}{sort} onclick="sortBy(this)">{html.escape(title)}'
                    f"<span class=arrow>{arrow}</span></th>")
    head.append("<th data-kind=text>curves<span class=arrow></span></th>")
    body = []
    for row in group:
        tds = []
        for key, _, kind in cols:
            text = html.escape(_cell(row, key))
            if kind == "num":
                value = row[key]
                tds.append(f'<td class=num data-v="{-1 if value is None else value}">{text}</td>')
            elif key == "link" and row["link"]:
                tds.append(f'<td><a href="{html.escape(row["link"], quote=True)}" '
                           f'rel="noopener noreferrer">{text}</a></td>')
            else:
                tds.append(f"<td{' class=note' if key == 'footnote' else ''}>{text}</td>")
        tds.append("<td>" + "".join(_img(p) for p in row["images"].values()) + "</td>")
        cls = f" class={row['status']}" if row["status"] != "full" else ""
        body.append(f"<tr{cls} data-card=\"{html.escape(row['card'], quote=True)}\">{''.join(tds)}</tr>")
    group_id = html.escape(f"{dataset}/{threat}", quote=True)
    return (f"<h2>{html.escape(dataset)}, {html.escape(threat)}</h2>"
            f'<table class=cards data-group="{group_id}" data-col={first} data-dir=desc>'
            f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def to_html(rows: List[dict], title: str) -> str:
    tables = "".join(_table(d, t, g) for (d, t), g in group_rows(rows))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><p>One table per dataset and threat model. Click a "
            "header to sort (numbers highest first, text A to Z first; click again to reverse; "
            "the arrow shows the direction). Shaded: partial evaluations (orange, marked by what "
            f"ran) and published cards without an advtrain sidecar (blue).</p>{tables}"
            "</body></html>\n")


def report_files(root, out_prefix=None) -> tuple:
    """``(<out_prefix>.md, <out_prefix>.html)``, default prefix ``<root>/report``."""
    prefix = Path(out_prefix) if out_prefix else Path(root) / "report"
    return prefix.with_name(prefix.name + ".md"), prefix.with_name(prefix.name + ".html")


def report_inputs(root) -> dict:
    """``{label: path}`` of every card and sidecar the report reads (for the output-path check)."""
    out = {}
    for card in find_cards(root):
        out[f"card {card}"] = card
        side = card.with_name(card.stem + SIDECAR_SUFFIX)
        if side.is_file():
            out[f"sidecar {side}"] = side
    return out


def write_report(root, out_prefix=None) -> tuple:
    """Write ``<out_prefix>.md`` and ``.html`` (default ``<root>/report``); return their paths."""
    from advtrain.io.atomic import commit_files

    rows = collect(root)
    md, page = report_files(root, out_prefix)
    commit_files({md: to_markdown(rows), page: to_html(rows, f"advtrain report: {root}")},
                 primary=page)
    return md, page, rows
