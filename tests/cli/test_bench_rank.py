"""CPU tests of bench/rank_objectives.py: the exact McNemar p-value against an independent float64
expression (log-gamma binomial terms), the discordant-pair counts, the table order (by training CPU
seconds, by AA accuracy) and the pairs of neighbours in it, the regimes against their configs
(configs/*_cifar10.yaml; PGD-AT / TRADES with K=10 as the papers), the figures, and per-regime
epochs (``--epochs-for``: parsing, bad input, the trainer's config, the epochs column, merging)."""
from __future__ import annotations

import math
import os
import sys

import pytest
from types import SimpleNamespace

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


def _result(cpu, clean, pgd, aa, epochs=2):
    n = len(clean)
    out = {"epochs": epochs, "train_cpu_seconds": cpu, "train_seconds": 2 * cpu, "seconds": 5.0, "eval_cpu_seconds": 3.0}
    for key, hits in (("clean", clean), ("pgd", pgd), ("aa", aa)):
        out[key] = {"per_image": hits, "correct": sum(hits), "acc": sum(hits) / n,
                    "ci95": R.wilson(sum(hits), n)}
    return out


def _four():
    #          CPU s  clean               PGD                 AA
    return {"pgd_at10": _result(300.0, [1, 1, 0, 0, 1, 1], [1, 1, 0, 0, 1, 0], [1, 1, 0, 0, 1, 0]),
            "clean": _result(20.0, [1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]),
            "grad_align": _result(150.0, [1, 1, 1, 0, 1, 1], [1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0]),
            "fgsm_rs": _result(40.0, [1, 1, 1, 0, 1, 1], [1, 1, 0, 0, 0, 1], [1, 1, 0, 0, 0, 1])}


def test_order_by_cost_and_by_aa():
    res = _four()
    assert list(R.ordered(res, "cost")) == ["clean", "fgsm_rs", "grad_align", "pgd_at10"]
    # AA correct: pgd_at10 3, fgsm_rs 3 (tie: given order), grad_align 1, clean 0
    assert list(R.ordered(res, "aa")) == ["pgd_at10", "fgsm_rs", "grad_align", "clean"]
    assert list(R.ordered(res, "given")) == list(res)


def test_neighbour_pairs_follow_table_order():
    res = R.ordered(_four(), "cost")
    pairs = R.neighbours(res)
    assert pairs == [("clean", "fgsm_rs"), ("fgsm_rs", "grad_align"), ("grad_align", "pgd_at10")]
    rows = R.paired(res, pairs)
    # fgsm_rs vs grad_align, PGD: [1,1,0,0,0,1] vs [1,0,0,0,1,0] -> only first 2 (images 2, 6),
    # only second 1 (image 5)
    mid = rows[1]["pgd"]
    assert (mid["only_first"], mid["only_second"]) == (2, 1)
    assert mid["p"] == pytest.approx(p_float64(2, 1)) and mid["diff"] == pytest.approx(1 / 6)
    # grad_align vs pgd_at10, AA: [1,0,0,0,0,0] vs [1,1,0,0,1,0] -> b = 0, c = 2
    last = rows[2]["aa"]
    assert (last["only_first"], last["only_second"]) == (0, 2)
    assert last["p"] == pytest.approx(0.5)  # 2 * P(X <= 0), X ~ Binomial(2, 1/2): 2 * 1/4


def test_table_rows_in_order_with_cost_column():
    args = SimpleNamespace(pgd_steps=20, order="cost")
    res = R.ordered(_four(), "cost")
    lines = R.table(res, args).splitlines()[2:]
    assert [line.split("|")[1].strip() for line in lines] == ["clean", "FGSM-RS", "GradAlign", "PGD-AT (K=10)"]
    assert [line.split("|")[2].strip() for line in lines] == ["20", "40", "150", "300"]
    text = R.pair_tables(res, args)
    near, every = text.split("every two")
    assert near.count("\n| ") == 4 and every.count("\n| ") == 7  # header + 3 pairs; header + 6 pairs


def _bench_args(**epochs_for):
    names = R.CHOICES
    return SimpleNamespace(seed=0, data="d", batch_size=64, train_images=64, depth=10, width=1,
                           lr=0.1, epochs=1, epochs_for={o: epochs_for.get(o, 1) for o in names})


@pytest.mark.parametrize("name", ["clean", "fgsm_rs", "n_fgsm", "grad_align"])
def test_single_step_regimes_train_as_their_configs(name):
    from advtrain.config import from_dict, load

    mine = from_dict(R.config(name, _bench_args(), os.path.join("out", "runs", name)))
    ref = load(os.path.join(ROOT, "configs", f"{name}_cifar10.yaml"))
    assert mine.objective == ref.objective
    assert mine.attack == ref.attack


@pytest.mark.parametrize("name,objective,init", [("pgd_at10", "pgd_at", "uniform"),
                                                 ("trades10", "trades", "normal")])
def test_pgd_regimes_use_ten_fixed_steps(name, objective, init):
    """Madry et al. (PGD-AT) and Zhang et al. (TRADES) on CIFAR-10: K = 10 steps of 2/255 at 8/255,
    no eps ramp; PGD-AT from a uniform start, TRADES from x + 0.001 N(0, 1)."""
    from advtrain.config import from_dict

    cfg = from_dict(R.config(name, _bench_args(), os.path.join("out", "runs", name)))
    assert cfg.objective.name == objective
    a = cfg.attack
    assert (a.name, a.schedule, a.ramp, a.steps) == ("pgd", "fixed", False, 10)
    assert a.eps == pytest.approx(8 / 255) and a.step_size == pytest.approx(2 / 255)
    assert a.init == init


def test_figures_written_as_png_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    args = SimpleNamespace(pgd_steps=20, n_test=6, depth=10, width=1, train_images=64, epochs=1,
                           out=str(tmp_path))
    res = _four()
    res["clean"]["epochs"] = 16  # regimes of different epochs: each point's label names its own
    paths = R.plot(R.ordered(res, "cost"), args)
    assert sorted(os.path.basename(p) for p in paths) == ["rank_cost.png", "rank_cost.svg",
                                                          "rank_objectives.png", "rank_objectives.svg"]
    with open(tmp_path / "rank_cost.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "rank_cost.svg").read_text()
    assert "<svg" in svg and "training CPU seconds" in svg
    assert "clean, 16 ep" in svg and "2-16 epochs" in svg


def test_epochs_for_parses_and_defaults_the_others():
    got = R.parse_epochs_for(" clean=16, fgsm_rs = 8 ,", ["clean", "fgsm_rs", "pgd_at10"], 2)
    assert got == {"clean": 16, "fgsm_rs": 8, "pgd_at10": 2}
    assert R.parse_epochs_for(None, ["clean"], 3) == {"clean": 3}


@pytest.mark.parametrize("text,words", [("clean", "write REGIME=N"), ("=3", "write REGIME=N"),
                                        ("clean=0", "positive integer"), ("clean=1.5", "positive integer"),
                                        ("clean=-2", "positive integer"), ("clean=x", "positive integer"),
                                        ("trades10=2", "not one of --objectives"),
                                        ("clean=2,clean=3", "twice")])
def test_epochs_for_bad_input_is_named(text, words):
    with pytest.raises(ValueError, match=words):
        R.parse_epochs_for(text, ["clean", "fgsm_rs"], 2)


@pytest.mark.parametrize("argv,words", [
    (["--objectives", "clean", "--epochs-for", "clean=two"], "--epochs-for clean='two'"),
    (["--objectives", "clean", "--epochs-for", "n_fgsm=8"], "not one of --objectives"),
    (["--from-results", "a.json", "--epochs-for", "clean=8"], "drop --epochs-for")])
def test_epochs_for_bad_input_exits_with_one_line(argv, words, tmp_path, capsys):
    assert R.main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_config_trains_each_regime_for_its_epochs():
    from advtrain.config import from_dict

    args = _bench_args(clean=16, grad_align=3)
    for name, epochs in (("clean", 16), ("grad_align", 3), ("pgd_at10", 1)):
        cfg = from_dict(R.config(name, args, os.path.join("out", "runs", name)))
        assert cfg.optim.epochs == epochs and cfg.optim.schedule == "cosine"


def test_epochs_column_only_when_epochs_differ():
    args = SimpleNamespace(pgd_steps=20, order="cost")
    same = R.ordered(_four(), "cost")
    assert "epochs" not in R.table(same, args)
    res = _four()
    res["clean"]["epochs"], res["fgsm_rs"]["epochs"] = 16, 8
    lines = R.table(R.ordered(res, "cost"), args).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:4]] == ["regime", "epochs", "train CPU s"]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in lines[2:]}
    assert rows == {"clean": "16", "FGSM-RS": "8", "GradAlign": "2", "PGD-AT (K=10)": "2"}
    assert R.epochs_text(res) == "2-16 epochs" and R.epochs_text(same) == "2 epochs"


def _saved(path, results, epochs, epochs_for=None):
    import json

    args = {"epochs": epochs, "train_images": 64, "depth": 10, "width": 1, "batch_size": 64,
            "lr": 0.1, "n_test": 6, "subset_seed": 0, "pgd_steps": 20, "seed": 0}
    if epochs_for is not None:
        args["epochs_for"] = epochs_for
    path.write_text(json.dumps({"args": args, "wall_seconds": 1.0, "cpu_seconds": 1.0,
                                "results": results}))
    return str(path)


def test_merge_keeps_each_rows_epochs(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(R, "plot", lambda results, args: [])
    four = _four()
    # a file written before rows recorded their epochs: every row trained its --epochs (2)
    old = {o: {k: v for k, v in four[o].items() if k != "epochs"} for o in ("pgd_at10", "grad_align")}
    new = {"clean": dict(four["clean"], epochs=16), "fgsm_rs": dict(four["fgsm_rs"], epochs=8)}
    files = [_saved(tmp_path / "old.json", old, 2), _saved(tmp_path / "new.json", new, 2,
                                                           {"clean": 16, "fgsm_rs": 8})]
    out = tmp_path / "merged"
    assert R.main(["--from-results", ",".join(files), "--order", "cost", "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert {o: r["epochs"] for o, r in saved["results"].items()} == {
        "clean": 16, "fgsm_rs": 8, "grad_align": 2, "pgd_at10": 2}
    assert saved["args"]["epochs"] is None and saved["args"]["epochs_for"]["clean"] == 16
    assert "| epochs |" in (out / "table.md").read_text()


def test_merge_refuses_a_regime_twice(tmp_path, capsys):
    four = _four()
    a = _saved(tmp_path / "a.json", {"clean": four["clean"]}, 2)
    b = _saved(tmp_path / "b.json", {"clean": dict(four["clean"], epochs=16)}, 2, {"clean": 16})
    assert R.main(["--from-results", f"{a},{b}", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: clean is in both") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_merge_takes_the_regimes_named_by_objectives(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setattr(R, "plot", lambda results, args: [])
    four = _four()
    a = _saved(tmp_path / "a.json", {"clean": four["clean"], "pgd_at10": four["pgd_at10"]}, 2)
    b = _saved(tmp_path / "b.json", {"clean": dict(four["clean"], epochs=16)}, 2, {"clean": 16})
    out = tmp_path / "out"
    assert R.main(["--from-results", f"{a},{b}", "--objectives", "pgd_at10,clean", "--out", str(out)]) == 2
    assert "clean is in both" in capsys.readouterr().err  # each regime from one file only
    # take pgd_at10 alone from a, then merge it with b's clean
    assert R.main(["--from-results", f"{a},{b}", "--objectives", "pgd_at10", "--out", str(out)]) == 0
    assert list(json.loads((out / "results.json").read_text())["results"]) == ["pgd_at10"]
    out2 = tmp_path / "out2"
    assert R.main(["--from-results", f"{out / 'results.json'},{b}", "--out", str(out2)]) == 0
    saved = json.loads((out2 / "results.json").read_text())
    assert {o: r["epochs"] for o, r in saved["results"].items()} == {"pgd_at10": 2, "clean": 16}
    assert saved["results"]["pgd_at10"]["aa"]["per_image"] == four["pgd_at10"]["aa"]["per_image"]
    assert R.main(["--from-results", a, "--objectives", "trades10", "--out", str(out2)]) == 2
    assert "trades10 is in none of the --from-results files" in capsys.readouterr().err
