"""I-OPT hill climbing: history, bounds, prediction preservation, the sound final estimate, and
the search history file."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from unicr_pl.iopt import IOPTConfig, iopt
from unicr_pl.noises import create_noise
from unicr_pl.radius import closed_forms as cf
from unicr_pl.results import HistoryWriter
from unicr_pl.smoothing import ABSTAIN, SmoothedClassifier


class Halfspace(nn.Module):
    def forward(self, x):
        z = x.flatten(1)[:, :1]
        return torch.cat([-z, z], dim=1)


def cohen_only(noise, p_a):
    # Radius function of the test: the l2 radius as if the noise were Gaussian of its RMS.
    return cf.cohen_l2(noise.sigma, p_a)


def setup(x0=0.3):
    g = SmoothedClassifier(
        Halfspace(), create_noise("gennormal", sigma=0.5, beta=2.0), 2, None, 2000
    )
    x = torch.zeros(1, 16)
    x[0, 0] = x0
    return g, x


def test_climbs_records_everything_and_restores_the_noise():
    # Far from the boundary p_A saturates at alpha0^(1/n), so R = sigma Phi^-1(p_A) grows with
    # sigma: the climb must go up to the bound 0.6, record the blocked step, and keep going.
    g, x = setup(x0=2.0)
    cfg = IOPTConfig(steps={"sigma": 0.1}, bounds={"sigma": (0.05, 0.6)}, rounds=6, n_select=2000)
    res = iopt(
        g, x, {"sigma": 0.5}, 1, cohen_only, 4000, 0.001, cfg, torch.Generator().manual_seed(0)
    )
    start = res.history[0]
    assert res.prediction == 1 and res.radius > 0
    assert abs(res.params["sigma"] - 0.6) < 1e-9  # it climbed to the bound
    assert res.history[-1].get("final") and res.radius == res.history[-1]["radius"]
    assert res.radius > start["radius"]
    assert any(h.get("skipped") == "bound" for h in res.history)
    assert g.noise.sigma == 0.5  # the classifier's own noise is put back


def test_never_reports_a_radius_for_another_class():
    g, x = setup(x0=0.3)
    cfg = IOPTConfig(steps={"sigma": 0.1}, bounds={"sigma": (0.05, 0.6)}, rounds=2, n_select=500)
    res = iopt(
        g, x, {"sigma": 0.5}, 0, cohen_only, 1000, 0.001, cfg, torch.Generator().manual_seed(1)
    )
    assert res.prediction == ABSTAIN and res.radius == 0.0
    assert all(not h["valid"] for h in res.history if "valid" in h)


def test_sound_mode_bounds_p_a_on_fresh_draws():
    g, x = setup(x0=0.2)
    cfg = IOPTConfig(steps={"sigma": 0.1}, bounds={"sigma": (0.05, 0.6)}, rounds=3, n_select=300)
    sound = iopt(
        g, x, {"sigma": 0.5}, 1, cohen_only, 5000, 0.001, cfg, torch.Generator().manual_seed(2)
    )
    final = sound.history[-1]
    assert final.get("final") and np.isclose(sound.p_a, final["p_a"])
    # With 5000 fresh draws the bound is tighter than the 300-draw selection estimates'.
    true_p = float(torch.distributions.Normal(0, sound.params["sigma"]).cdf(torch.tensor(0.2)))
    assert sound.p_a <= true_p


# ---- the search history: IOPTResult.record -> results.HistoryWriter -> <out>.iopt.jsonl ----


def test_record_lists_every_candidate_as_json():
    g, x = setup(x0=2.0)
    cfg = IOPTConfig(steps={"sigma": 0.1}, bounds={"sigma": (0.05, 0.6)}, rounds=3, n_select=500)
    res = iopt(
        g, x, {"sigma": 0.5}, 1, cohen_only, 1000, 0.001, cfg, torch.Generator().manual_seed(0)
    )
    record = json.loads(json.dumps(res.record(idx=7, label=1)))
    assert record["idx"] == 7 and record["radius"] == res.radius
    assert record["params"] == res.params and len(record["candidates"]) == len(res.history)
    tried = [c for c in record["candidates"] if "skipped" not in c]
    assert all({"sigma", "p_a", "radius", "valid"} <= set(c) for c in tried)
    assert record["candidates"][-1]["final"] and record["candidates"][-1]["p_a"] == res.p_a


def test_history_file_resumes_with_the_tsv(tmp_path):
    """Lines are appended and flushed; a killed writer's half line is cut on reopening; two
    writers (two ranks) share the file; `read` keeps the last line per idx of the TSV's rows."""
    out = tmp_path / "run.tsv"
    first, second = HistoryWriter(out), HistoryWriter(out)
    first.write({"idx": 0, "radius": 0.1})
    second.write({"idx": 1, "radius": 0.2})
    first.write({"idx": 2, "radius": 0.3})  # its TSV row never written (killed in between)
    with open(first.path, "ab") as fh:
        fh.write(b'{"idx": 3, "rad')  # killed mid-line
    first.close()
    second.close()
    assert first.path == tmp_path / "run.tsv.iopt.jsonl"
    again = HistoryWriter(out)
    assert not again.path.read_bytes().endswith(b"rad")
    again.write({"idx": 2, "radius": 0.3, "again": True})  # certified again on resume
    again.close()
    out.write_text("idx\tradius\tcorrect\n0\t0.1\t1\n1\t0.2\t1\n2\t0.3\t1\n")
    found = HistoryWriter.read(out)
    assert sorted(found) == [0, 1, 2] and found[2]["again"] and found[1]["radius"] == 0.2
    lines = first.path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)


def test_certify_task_writes_family_columns_and_history(tmp_path):
    """I-OPT through CertifyTask: each row carries radius_family_l<p> beside the proven radius,
    and <out>.iopt.jsonl one line per input with its candidates."""
    import lightning as L

    from unicr_pl.lightning.certify import CertifyTask
    from unicr_pl.lightning.module import UniCRModule
    from unicr_pl.results import read_results

    model = UniCRModule(Halfspace(), 2, [1, 4, 4], [0.0], [1.0], "gennormal", sigma=0.5, beta=2.0)
    noise = create_noise("gennormal", sigma=0.5, beta=2.0)
    cfg = IOPTConfig(steps={"sigma": 0.1}, bounds={"sigma": (0.05, 0.6)}, rounds=2, n_select=200)
    out = tmp_path / "io.tsv"
    task = CertifyTask(model, noise, 20, 400, 0.001, 400, [2.0, math.inf], False, 0, str(out),
                       {"test": 1}, cfg)  # fmt: skip
    data = [(torch.full((1, 4, 4), v), 1) for v in (1.0, 2.0)]
    task.set_inputs(data, [0, 1], 1)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    trainer.predict(task, return_predictions=False)
    rows = read_results(out)
    history = HistoryWriter.read(out)
    assert sorted(history) == [0, 1] and all(h["candidates"] for h in history.values())
    for r in rows:
        for p in ("l2", "linf"):
            assert 0 < float(r[f"radius_{p}"]) <= float(r[f"radius_family_{p}"])
        assert float(r["radius"]) == pytest.approx(history[int(r["idx"])]["radius"], rel=1e-9)
