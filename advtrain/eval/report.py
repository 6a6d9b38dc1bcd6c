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
import os
import unicodedata
from pathlib import Path
from typing import List, Optional

from advtrain.data.facts import FACTS
from advtrain.eval.cards import CARD_THREAT_MODELS
from advtrain.eval.settings import CORRUPTIONS
from advtrain.errors import InputError
from advtrain.io.names import SIDECAR_SUFFIX
from advtrain.io.safeload import read_json_object
from advtrain.io.safeload import read_regular as safe_read_regular


# ----------------------------------------------------------------------------- reading DIR
# A folder of cards is something people send each other: nothing in it is trusted. Everything the
# report reads goes through this layer: every path is resolved and must stay inside DIR, only
# regular files are opened (never a FIFO, device or directory: no hang), and sizes, depth and
# counts are bounded. What it returns is checked: numbers in their ranges, text without control
# characters; the renderers below escape text again for their format.
MAX_DEPTH = 8  # folders below DIR (the model_info layout uses 2)
MAX_ENTRIES = 20_000  # directory entries visited
MAX_CARDS = 5_000
MAX_JSON_BYTES = 1 << 20  # a card or sidecar is a few KiB
MAX_PNG_BYTES = 8 << 20  # a curve is ~50 KiB
MAX_TEXT = 200  # characters of one text field shown in the table
MAX_COUNT = 10 ** 9  # image counts read from a sidecar
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_inside(path, root, what: str = "file") -> Path:
    """``path`` with every link resolved; one line when it leaves ``root`` (already resolved) or
    is a link loop. The result is what will be opened, so a link cannot lead outside later."""
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}; remove the link or the entry") from None
    if not _inside(real, str(root)):
        raise InputError(f"{path} leads to {real}, outside {root}; a report reads only files "
                         f"inside DIR: remove the link or copy the {what} in") from None
    return Path(real)


def read_regular(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of DIR (:func:`advtrain.io.safeload.read_regular`)."""
    return safe_read_regular(path, limit, what, fix="remove it from DIR")


def find_cards(root) -> List[Path]:
    """Every card under ``root`` (sidecars excluded), resolved and inside ``root``, in path order;
    one line when none, or when DIR is deeper, larger or stranger than a folder of cards.
    Linked folders are not entered; a linked card must resolve inside ``root``."""
    given = Path(root)
    if not given.is_dir():
        raise InputError(f"{root} is not a directory; give the folder of the cards, e.g. "
                         "advtrain report model_info")
    top = os.path.realpath(given)
    cards, entries, stack = [], 0, [(top, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise InputError(f"{folder}: {e.strerror or e}; fix the folder's permissions or "
                             "remove it from DIR") from None
        for entry in listing:
            entries += 1
            if entries > MAX_ENTRIES:
                raise InputError(f"{root} holds more than {MAX_ENTRIES} entries; give the folder "
                                 "of the cards, not a larger tree")
            if entry.is_dir(follow_symlinks=False):
                if depth + 1 > MAX_DEPTH:
                    raise InputError(f"{entry.path} is more than {MAX_DEPTH} folders below "
                                     f"{root}; give the folder of the cards")
                stack.append((entry.path, depth + 1))
            elif entry.name.endswith(".json") and not entry.name.endswith(SIDECAR_SUFFIX):
                cards.append(resolve_inside(entry.path, top, "card"))
                if len(cards) > MAX_CARDS:
                    raise InputError(f"{root} holds more than {MAX_CARDS} cards; report on a "
                                     "smaller folder")
    if not cards:
        raise InputError(f"{root} holds no result cards (*.json); write some with advtrain eval "
                         f"--out {root}")
    return sorted(set(cards))  # a card and a link to it inside DIR: one row


def read_json(path: Path, root=None) -> dict:
    """A card or sidecar: a regular file inside ``root`` of at most MAX_JSON_BYTES, a JSON object."""
    if root is not None:
        path = resolve_inside(path, root, "JSON file")
    return read_json_object(path, MAX_JSON_BYTES, "card", fix="fix or remove the file")


def _is_control(c: str) -> bool:
    """Control, format (bidi overrides, zero-width), surrogate, private and unassigned characters,
    and line/paragraph separators: none belongs in a one-line table cell."""
    return unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")


def clean_text(value) -> str:
    """A card's text field for the table: one line (newlines and every other control or format
    character become spaces), at most MAX_TEXT characters. Renderers still escape it."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    text = value if isinstance(value, str) else str(value)
    text = " ".join("".join(" " if _is_control(c) else c for c in text[:4 * MAX_TEXT]).split())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "\u2026"


_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_PUNCT = set("\\`*_[]()!|~$^:.@#{}")  # inline syntax, GFM autolinks (www. http: a@b), math


def md_escape(value) -> str:
    """Text as inert Markdown inside a GFM table cell: one line (``clean_text``), ``& < >`` as
    entities (no raw HTML), every other character with an inline meaning backslash-escaped
    (emphasis, code, links and images, autolinks, strikethrough, math, the cell's ``|``)."""
    return "".join(_MD_ENTITIES.get(c) or ("\\" + c if c in _MD_PUNCT else c)
                   for c in clean_text(value))


def _percent(card: dict, key: str, path: Path) -> Optional[float]:
    """``card[key]`` as a percentage; None when absent; a value that is not one (NaN, 1e999, -5,
    text) is refused in one line rather than put in the table as a number."""
    value = card.get(key)
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, (int, float, str)) and \
            not isinstance(value, bool) and len(str(value)) <= 40 else None
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not 0.0 <= number <= 100.0:  # NaN fails both comparisons
        raise InputError(f"{path}: {key} = {clean_text(value)[:40]!r} is not a percentage in "
                         "[0, 100]; fix or remove the card")
    return number


def _count(side: dict, key: str, path: Path) -> Optional[int]:
    """An image count a sidecar records: None when absent, else an int in [0, MAX_COUNT]."""
    value = side.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise InputError(f"{path}: {key} = {clean_text(value)[:40]!r} is not an image count in "
                         f"[0, {MAX_COUNT}]; write the sidecar again or remove it")
    return value


def _curves(side: Optional[dict], side_path: Path, root=None) -> dict:
    """The ``--eps-sweep`` images a sidecar names: plain ``.png`` file names beside the card (a
    path elsewhere would embed any readable file in a page meant to be mailed), each resolved
    inside DIR (a link to a file outside is refused), a regular PNG file of bounded size.
    Returns kind -> PNG bytes, or None for a curve that is missing."""
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
            raise InputError(f"{side_path}: eps_sweep.files[{clean_text(kind)[:40]!r}] = "
                             f"{clean_text(name)[:60]!r} is not a .png file name beside the "
                             "card; remove the entry or the sidecar")
        path = side_path.parent / name
        if not os.path.lexists(path):
            images[kind] = None
            continue
        if root is not None:
            path = resolve_inside(path, root, "curve")
        data = read_regular(path, MAX_PNG_BYTES, "curve")
        if not data.startswith(PNG_SIGNATURE):
            raise InputError(f"{path} is not a PNG image; remove it or the sidecar's entry")
        images[kind] = data
    return images


def read_card(path: Path, root) -> tuple:
    """``(card, sidecar or None, sidecar path, curves)`` of one card under ``root``, validated:
    both JSON objects read as regular files inside DIR, curves as PNG bytes."""
    root = os.path.realpath(root)
    path = resolve_inside(path, root, "card")
    card = read_json(path, root)
    side_path = path.with_name(path.stem + SIDECAR_SUFFIX)
    side = read_json(side_path, root) if os.path.lexists(side_path) else None
    return card, side, side_path, _curves(side, side_path, root)


def partial_reason(side: Optional[dict], threat_model: str, dataset: str = "",
                   side_path: Path = Path("sidecar")) -> str:
    """'' for a full standard evaluation, else why it is not one (from the sidecar; a sidecar
    without advtrain's verdict is compared with the test-set size of ``dataset``'s facts row);
    counts are checked (``_count``) and text is one cleaned line."""
    if side is None:
        return "no sidecar"
    dataset = dataset or side.get("dataset")
    row = FACTS.get(dataset) if isinstance(dataset, str) else None
    full_n = row.test_images if row is not None else None  # a run on fewer test images is partial
    if threat_model == CORRUPTIONS and "full_standard" not in side:  # written before the one writer
        n = _count(side, "n_per_block", side_path)
        return "" if n == full_n else f"{n} images per corruption and severity"
    n = side.get("n_ex")
    short = (f"standard AutoAttack on {n} of {full_n} test images" if isinstance(n, int)
             and full_n is not None and n < full_n and threat_model != CORRUPTIONS else "")
    if "full_standard" in side:  # the sidecar's own verdict and description (advtrain.eval.cards)
        if side["full_standard"] is True:  # "no" or 1 is not advtrain's verdict: partial
            return short  # a sidecar written before issue 24 judged "full" by the file's size
        return clean_text(side.get("evaluation")) or "not full standard"
    why = []
    if side.get("version") not in (None, "standard"):
        attacks = side.get("attacks")
        why.append(clean_text(", ".join(map(str, attacks[:20])) if isinstance(attacks, list)
                              else side.get("version")))
    n = _count(side, "n_ex", side_path)
    if n is not None and (full_n is None or n < full_n):
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
    ok = (text.lower().startswith(("https://", "http://")) and len(text) <= 2000 and clean_text(text) == text
          and not any(c.isspace() for c in text))
    return text if ok else ""


def card_row(path: Path, root: Path) -> dict:
    """One table row from a card and, when present, its sidecar (read through ``read_card``:
    nothing outside DIR, text fields cleaned with ``clean_text``)."""
    root = Path(os.path.realpath(root))
    card, side, side_path, images = read_card(path, root)
    path = resolve_inside(path, root, "card")
    threat = clean_text((side or {}).get("threat_model")) or clean_text(path.parent.name)
    acc_key = "corruptions_acc" if "corruptions_acc" in card else "autoattack_acc"
    robust, clean = _percent(card, acc_key, path), _percent(card, "clean_acc", path)
    if robust is None and clean is None:
        raise InputError(f"{path} has neither clean_acc nor {acc_key}; it is not a RobustBench "
                         "card (remove it or point report at the cards' folder)")
    external = _percent(card, "external", path) if acc_key == "autoattack_acc" else None
    best = min(x for x in (robust, external) if x is not None) if robust is not None else external
    dataset = clean_text(card.get("dataset") or (side or {}).get("dataset")
                         or path.parent.parent.name)
    partial = partial_reason(side, threat, dataset, side_path) if side is not None else ""
    status = "published" if side is None else "partial" if partial else "full"
    return {"card": str(path.relative_to(root)), "name": clean_text(path.stem),
            "title": clean_text(card.get("name") or path.stem),
            "dataset": clean_text(card.get("dataset") or (side or {}).get("dataset")),
            "threat_model": threat, "eps": clean_text(card.get("eps")),
            "architecture": clean_text(card.get("architecture")), "clean": clean,
            "robust": robust, "external": external, "best": best, "metric": acc_key,
            "partial": partial, "status": status,
            "evaluation": {"full": "full", "published": PUBLISHED}.get(status, f"partial: {partial}"),
            "venue": clean_text(card.get("venue")), "link": _link(card.get("link")),
            "unreliable": _flag(card, "unreliable"),
            "footnote": clean_text(card.get("footnote")), "images": images}


def _sort_key(row: dict) -> tuple:
    """RobustBench's leaderboard order: best known robust accuracy (``external`` when the card has
    one, else AutoAttack's; corruptions accuracy for corruptions cards), highest first."""
    return (row["best"] is None, -(row["best"] or 0.0), row["name"])


def collect(root) -> List[dict]:
    """Rows of every card under ``root``, grouped (:func:`group_rows`) and, within a group, by best
    known robust accuracy descending (missing last)."""
    root = Path(os.path.realpath(root))
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


def to_markdown(rows: List[dict]) -> str:
    lines = []
    for (dataset, threat), group in group_rows(rows):
        cols = columns_for(threat)
        lines += [f"## {md_escape(dataset)}, {md_escape(threat)}", "",
                  "| " + " | ".join(title for _, title, _ in cols) + " |",
                  "|" + "|".join("---:" if kind == "num" else "---" for _, _, kind in cols) + "|"]
        for row in group:
            cells = [_cell(row, k) if kind == "num" else md_escape(_cell(row, k)) for k, _, kind in cols]
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


def _img(kind: str, png: Optional[bytes]) -> str:
    """A curve read by ``_curves`` (validated PNG bytes), or a note that it is missing."""
    if png is None:
        return f"<span class=miss>missing {html.escape(clean_text(kind))}</span>"
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(clean_text(kind))}" src="data:image/png;base64,{data}">'


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
        tds.append("<td>" + "".join(_img(k, png) for k, png in row["images"].items()) + "</td>")
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
