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
import os
import stat
import unicodedata
from pathlib import Path
from typing import List, Optional

from advtrain.data.facts import FACTS
from advtrain.eval.settings import CORRUPTIONS
from advtrain.errors import InputError
from advtrain.io.names import SIDECAR_SUFFIX


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
    """The bytes of the regular file ``path`` (resolved), at most ``limit`` of them; a FIFO, a
    device, a directory or a larger file is one line (opened non-blocking, checked with fstat, so
    a FIFO never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}; remove or replace the {what}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path} is not a regular file; a report reads only regular files: "
                             f"remove it from DIR")
        if st.st_size > limit:
            raise InputError(f"{path} holds {st.st_size} bytes, more than a {what} may "
                             f"({limit}); remove it from DIR")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:  # grew while read
            raise InputError(f"{path} is larger than a {what} may be ({limit} bytes); remove it")
        return data
    finally:
        os.close(fd)


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
    raw = read_regular(path, MAX_JSON_BYTES, "card")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"{path} is not valid JSON ({str(e).splitlines()[0][:80]}); fix or "
                         "remove the file") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} holds a JSON {type(data).__name__}, not a card object; remove it")
    return data


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
    row = FACTS.get(dataset) if isinstance(dataset, str) else None
    full_n = row.test_images if row is not None else None  # a run on fewer test images is partial
    if threat_model == CORRUPTIONS and "full_standard" not in side:  # written before the one writer
        n = _count(side, "n_per_block", side_path)
        return "" if n == full_n else f"{n} images per corruption and severity"
    if "full_standard" in side:  # the sidecar's own verdict and description (advtrain.eval.cards)
        if side["full_standard"] is True:  # "no" or 1 is not advtrain's verdict: partial
            return ""
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
    dataset = clean_text(card.get("dataset") or (side or {}).get("dataset")
                         or path.parent.parent.name)
    return {"card": str(path.relative_to(root)), "name": clean_text(path.stem),
            "dataset": clean_text(card.get("dataset") or (side or {}).get("dataset")),
            "threat_model": threat, "eps": clean_text(card.get("eps")),
            "architecture": clean_text(card.get("architecture")), "clean": clean,
            "robust": robust, "metric": acc_key,
            "partial": partial_reason(side, threat, dataset, side_path),
            "footnote": clean_text(card.get("footnote")), "images": images}


def collect(root) -> List[dict]:
    """Rows of every card under ``root``, robust accuracy descending (missing last)."""
    root = Path(os.path.realpath(root))
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


def _md_cell(row: dict, key: str) -> str:
    """A Markdown cell: numbers as formatted, text through ``md_escape``."""
    if key in ("clean", "robust"):
        return _cell(row, key)
    if key == "partial":
        return f"partial: {md_escape(row[key])}" if row[key] else "full"
    return md_escape(row[key])


def to_markdown(rows: List[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "|".join("---:" if k in ("clean", "robust") else "---"
                            for k, _ in COLUMNS) + "|"]
    for row in rows:
        cells = [_md_cell(row, k) for k, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    n_partial = sum(bool(r["partial"]) for r in rows)
    lines += ["", f"{len(rows)} cards, sorted by robust accuracy; {n_partial} marked partial "
                  "(not standard AutoAttack on the full test set, or no sidecar to say so)."]
    return "\n".join(lines) + "\n"


def _img(kind: str, png: Optional[bytes]) -> str:
    """A curve read by ``_curves`` (validated PNG bytes), or a note that it is missing."""
    if png is None:
        return f"<span class=miss>missing {html.escape(clean_text(kind))}</span>"
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(clean_text(kind))}" src="data:image/png;base64,{data}">'


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
            tds.append(f"<td{cls}{sort}>{html.escape(clean_text(_cell(row, key)))}</td>")
        tds.append("<td>" + "".join(_img(k, png) for k, png in row["images"].items()) + "</td>")
        body.append(f"<tr{' class=partial' if row['partial'] else ''}>{''.join(tds)}</tr>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Click a header to sort. Rows shaded: partial "
            "evaluations.</p>"
            f'<table id=cards data-col=6 data-dir=desc><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></body></html>\n")


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
