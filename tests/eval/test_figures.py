"""Issue 24.4: the sweep's figures are fit for papers: SVG beside a >= 150 dpi PNG, ticks at the
swept eps, a legend naming the attacks that ran, restarts distinguishable, the user's matplotlib
backend untouched; a sweep whose PGD accuracy stays well above zero at a large eps is flagged."""
from __future__ import annotations

import struct

import pytest

from advtrain.eval import sweep as S


def _sweep(points, restarts=2, head=8 / 255, attacks=("apgd-ce", "apgd-t")):
    from advtrain.utils import format_eps

    pts = [{"eps": e, "eps_str": format_eps(e), "pgd_acc": a,
            **({"autoattack_acc": a - 0.01} if e == head else {})} for e, a in points]
    curve = [1.0, 1.5, 1.8, 1.9]
    return {"norm": "Linf", "attack": "PGD-3", "steps": 3, "restarts": restarts, "n_ex": 8,
            "headline_eps": head, "points": pts,
            "autoattack": {"version": "custom", "attacks": list(attacks)},
            "convergence": {"eps": head, "loss_per_iteration": [curve] * restarts}}


POINTS = [(0.0, 0.9), (2 / 255, 0.7), (8 / 255, 0.5), (16 / 255, 0.2)]


def test_ticks_at_swept_eps_and_legend_names_the_attacks():
    fig = S.plot_accuracy(_sweep(POINTS))
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == pytest.approx([0.0, 2.0, 8.0, 16.0])  # eps x 255
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2/255", "8/255", "16/255"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["PGD-3, 2 restarts", "AutoAttack custom (apgd-ce, apgd-t)"]


def test_restarts_are_distinguishable_even_when_identical():
    fig = S.plot_convergence(_sweep(POINTS, restarts=3))
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3
    styles = {(ln.get_linestyle(), ln.get_marker()) for ln in lines}
    assert len(styles) == 3  # identical data, three different looks
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "restart 1", "restart 2", "restart 3"]


def test_files_png_150_dpi_and_svg(tmp_path):
    files = S.sweep_files(_sweep(POINTS), tmp_path / "M")
    names = [p.split("/")[-1] for p in files]
    assert names == ["M.eps_sweep.csv", "M.eps_sweep.png", "M.eps_sweep.svg", "M.convergence.png",
                     "M.convergence.svg"]
    assert len(S.FILE_KINDS) == len(files)
    png = files[str(tmp_path / "M.eps_sweep.png")]
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert (width, height) == (round(4.2 * 150), round(3.0 * 150))  # 4.2 x 3.0 in at 150 dpi
    svg = files[str(tmp_path / "M.eps_sweep.svg")].decode()
    assert "<svg" in svg and "</svg>" in svg


def test_backend_of_the_user_is_untouched(monkeypatch):
    import matplotlib

    before = matplotlib.get_backend()
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: pytest.fail("matplotlib.use called"))
    S.sweep_files(_sweep(POINTS), "/nonexistent/M")  # only bytes; nothing is written here
    from advtrain.train.metrics import plot_curves
    import tempfile, os

    with tempfile.TemporaryDirectory() as d:
        plot_curves([{"epoch": 1, "loss": 1.0, "lr": 0.1, "eps_t": 8 / 255}],
                    os.path.join(d, "curves.png"))
    assert matplotlib.get_backend() == before


@pytest.mark.parametrize("last, flagged", [(0.30, True), (0.04, False)])
def test_masking_flag_at_large_eps(last, flagged):
    sw = _sweep([(0.0, 0.9), (8 / 255, 0.5), (32 / 255, last)])
    record, flags = S.masking_check(sw)
    assert record["checked"] is True
    # limit: max(5 points, 10% of the clean 90%) = 9%
    assert record["limit"] == pytest.approx(max(0.05, 0.1 * 0.9))
    assert [f["code"] for f in flags] == (["sweep-not-zero"] if flagged else [])


def test_masking_not_checked_below_a_large_eps():
    record, flags = S.masking_check(_sweep(POINTS))  # largest 16/255 = 2 x 8/255
    assert record["checked"] is False and flags == [] and "sweep further" in record["why"]
