"""C-OPT: the local runner enumerates W&B's grid, runs it, skips finished points, tabulates."""

import csv
import itertools
import os
from pathlib import Path

import pytest

from unicr_pl import copt
from unicr_pl.results import write_callback_samples

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))


def wandb_grid(parameters: dict) -> list[dict]:
    """The grid in the order W&B's controller suggests it (wandb/sweeps, src/sweeps/grid_search.py
    and params.py), re-stated here so the check needs no package that pins numpy<2:

    * parameters are taken in *sorted name* order (HyperParameterSet.from_config sorts them);
    * `value` parameters are constants: in every run, not part of the product;
    * the runs are itertools.product over the `values` lists, the last sorted name fastest;
    * values are compared by a YAML hash in which an integral float equals the int, so a
      repeated combination (e.g. values [1, 1.0]) is suggested once.
    """
    names = sorted(parameters)
    grid = [n for n in names if "values" in parameters[n]]

    def same(v):  # W&B's yaml_hash identity: 3.0 and 3 are one value
        return repr(int(v)) if isinstance(v, float) and v.is_integer() else repr(v)

    runs, seen = [], set()
    for combo in itertools.product(*(parameters[n]["values"] for n in grid)):
        key = tuple(same(v) for v in combo)
        if key in seen:
            continue
        seen.add(key)
        chosen = dict(zip(grid, combo, strict=True))
        runs.append({n: chosen[n] if n in chosen else parameters[n]["value"] for n in names})
    return runs


def test_wandb_grid_fixture_follows_the_documented_order():
    # grid_search_next_runs' own docstring: {'a': {'values': [1, 2, 3]}} suggests a=1 first.
    assert wandb_grid({"a": {"values": [1, 2, 3]}}) == [{"a": 1}, {"a": 2}, {"a": 3}]
    # Sorted names: 'a' varies slowest even though the file lists it last; 'c' is a constant.
    got = wandb_grid({"c": {"value": 7}, "b": {"values": [1, 2]}, "a": {"values": ["x", "y"]}})
    assert [(p["a"], p["b"]) for p in got] == [("x", 1), ("x", 2), ("y", 1), ("y", 2)]
    assert all(p["c"] == 7 for p in got)
    assert wandb_grid({"a": {"values": [1, 1.0, 2]}}) == [{"a": 1}, {"a": 2}]


EDGE_CASES = {  # what the repo's sweep files do not exercise: file order != sorted order, repeats
    "unsorted": {"sigma": {"values": [0.25, 0.5]}, "beta": {"values": [1.0, 2.0, 0.5]}},
    "constants": {
        "noise": {"value": "gennormal"},
        "beta": {"values": [2.0]},
        "epochs": {"value": 3},
    },
    "repeats": {"beta": {"values": [1, 1.0, 2]}, "sigma": {"values": [0.5, 0.5]}},
}


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_runner_and_wandb_enumerate_the_same_grid(path):
    cfg = copt.load_sweep(path)
    assert copt.grid_points(cfg) == wandb_grid(cfg["parameters"])


@pytest.mark.parametrize("name", EDGE_CASES)
def test_runner_matches_wandb_on_edge_cases(name):
    cfg = {"method": "grid", "parameters": EDGE_CASES[name]}
    assert copt.grid_points(cfg) == wandb_grid(cfg["parameters"])


def test_agent_style_arguments():
    assert copt.agent_args({"beta": 0.75, "noise": "gennormal", "epochs": 10}) == [
        "--beta=0.75",
        "--noise=gennormal",
        "--epochs=10",
    ]


def test_bad_sweep_files(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("method: bayes\nparameters: {beta: {values: [1]}}\n")
    with pytest.raises(ValueError, match="method: grid"):
        copt.load_sweep(bad)
    bad.write_text("method: grid\nparameters: {beta: {min: 0, max: 1}}\n")
    with pytest.raises(ValueError, match="'value' or 'values'"):
        copt.load_sweep(bad)


def test_local_runner_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(
        "program: train.py\nmethod: grid\nmetric: {name: val/robustness_score_l2, goal: maximize}\n"
        "parameters:\n  dataset: {value: synthetic}\n  epochs: {value: 1}\n"
        "  noise: {value: gennormal}\n  beta: {values: [1.0, 2.0]}\n"
        "  sigma: {values: [0.25, 0.5]}\n"
    )
    extra = [
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        "--certification.max_samples=30",
        "--certification.n=100",
        "--certification.norms=[2]",  # one norm: each new beta costs one curve per norm set
    ]
    out = tmp_path / "copt"
    assert copt.main([str(sweep), "--out", str(out), *extra]) == 0
    assert len(list(out.glob("*/DONE"))) == 4
    with open(out / "copt_table.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["beta", "runs", "R_score_l2", "R_score_family_l2"]
    assert [r[0] for r in rows[1:]] == ["1.0", "2.0"] and all(r[1] == "2" for r in rows[1:])
    assert all(float(v) >= 0 for r in rows[1:] for v in r[2:])
    mtimes = {p: os.path.getmtime(p) for p in out.glob("*/train.log")}
    assert copt.main([str(sweep), "--out", str(out), *extra]) == 0  # all points are skipped
    assert mtimes == {p: os.path.getmtime(p) for p in out.glob("*/train.log")}


def test_table_rows_per_beta_proven_columns_first(tmp_path):
    """copt.table in this process: one row per beta over its sigma runs, the proven scores (l1,
    l2, linf) before the family ones, each the area under the max certified-accuracy curve."""
    cfg = {"parameters": {"beta": {"values": [1.0, 2.0]}, "sigma": {"values": [0.25, 0.5]}}}
    labels = ["l1", "l2", "linf", "family_l1", "family_l2", "family_linf"]
    points = []
    for beta in (1.0, 2.0):
        for sigma in (0.25, 0.5):
            run_dir = tmp_path / f"beta{beta}-sigma{sigma}"
            (run_dir / "run").mkdir(parents=True)  # train.py's own folder under the point's
            columns = {"idx": [0, 1], "correct": [1, 1]}
            for i, label in enumerate(labels):
                columns[f"radius_{label}"] = [beta * sigma * (i + 1), 0.0]
            write_callback_samples(run_dir / "run", 0, columns)
            points.append(({"beta": beta, "sigma": sigma}, run_dir))
    header, rows = copt.table(cfg, points)
    assert header == ["beta", "runs", *[f"R_score_{n}" for n in labels]]
    assert [r[:2] for r in rows] == [[1.0, 2], [2.0, 2]]
    for beta, row in zip((1.0, 2.0), rows, strict=True):
        # The sigma = 0.5 run dominates: half the samples certified up to beta * 0.5 * (i + 1).
        expected = [0.5 * beta * 0.5 * (i + 1) for i in range(6)]
        assert row[2:] == pytest.approx(expected, rel=1e-9)
