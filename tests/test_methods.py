"""`--method`: every training method end to end through train.py, the shared training step (bit
for bit Cohen's step for noise_aug), bf16 autocast, DDP on 2 CPU ranks, and bad input."""

import json
import os
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["WANDB_MODE"] = "disabled"  # never reach for the network in tests

import train  # noqa: E402
from unicr_pl.lightning import UniCRDataModule, UniCRModule  # noqa: E402
from unicr_pl.losses import repeat_copies  # noqa: E402

FAST = [
    "--dataset",
    "synthetic",
    "--epochs",
    "1",
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.logger",
    "false",
    "--certification.max_samples",
    "8",
    "--certification.n",
    "100",
]
# Cheap settings of each method (the defaults are the papers', meant for full training).
CHEAP = {
    "noise_aug": [],
    "consistency": ["--m", "2"],
    "macer": ["--m", "4", "--model.method_args", '{"start_epoch": 0}'],
    "smoothadv": ["--m", "2", "--model.method_args", '{"steps": 2, "warmup": 1}'],
}


def in_process(args, tmp_path, capsys):
    """train.run in this process: (exit code, stdout, stderr)."""
    code = train.run([*FAST, "--trainer.default_root_dir", str(tmp_path / "out"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "method,precision",
    [
        ("noise_aug", "32"),
        ("consistency", "32"),
        ("macer", "32"),
        ("smoothadv", "32"),
        ("smoothadv", "bf16-mixed"),
    ],
)
def test_every_method_trains_end_to_end(method, precision, tmp_path, capsys):
    args = ["--method", method, *CHEAP[method], "--trainer.precision", precision]
    code, out, err = in_process(args, tmp_path, capsys)
    assert code == 0, err[-2000:]
    assert "Certified accuracy on validation samples" in out
    (run,) = (tmp_path / "out").iterdir()
    suffix = "" if method == "noise_aug" else f"-{method}-"
    assert run.name.startswith(f"synthetic-gaussian-sigma0.25{suffix}")
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert saved["method"] == method
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["method"] == method  # certify.py rebuilds the same module


def module(method="noise_aug", noise="gaussian", **kw):
    return UniCRModule("lenet", 4, [1, 8, 8], [0.0], [1.0], noise=noise, method=method, **kw)


def test_noise_aug_step_is_cross_entropy_on_one_noisy_copy():
    model = module(noise="gennormal", beta=0.75, sigma=0.5)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 4, (16,))
    torch.manual_seed(3)
    loss = model._train_step((x, y))
    torch.manual_seed(3)  # the same draws, by hand
    expected = F.cross_entropy(model(x + model.noise.sample(x)), y)
    assert torch.equal(loss, expected)


@pytest.mark.parametrize("method", ["noise_aug", "consistency", "macer", "smoothadv"])
def test_every_method_under_bf16_autocast(method):
    model = module(method, m=2, method_args={"start_epoch": 0} if method == "macer" else None)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 4, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model._train_step((x, y))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_bad_method_is_one_line_listing_the_valid_ones(tmp_path, capsys):
    cases = {
        "unknown --method 'pgd'; valid methods: noise_aug, consistency, macer, smoothadv": [
            "--method",
            "pgd",
        ],
        "noise_aug: m (noisy copies per input) must be an integer >= 1, got 0": ["--m", "0"],
        "consistency: m (noisy copies per input) must be an integer >= 2, got 1": [
            "--method=consistency",
            "--m=1",
        ],
        "--method macer has no argument eta; valid: lbd, gamma, beta, start_epoch, radius": [
            "--method",
            "macer",
            "--model.method_args",
            '{"eta": 1}',
        ],
        "--method smoothadv needs noise: sigma is 0": ["--method", "smoothadv", "--sigma", "0"],
    }
    for message, args in cases.items():
        code, _, err = in_process(args, tmp_path, capsys)
        lines = [line for line in err.splitlines() if line.startswith("train.py")]
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, err)
    assert not (tmp_path / "out").exists()  # no run folder for bad input


def test_macer_curve_failure_is_one_line_before_training(tmp_path, capsys, monkeypatch):
    import unicr_pl.radius.bounds as bounds

    def unavailable(noise, dim):
        raise RuntimeError("the score is NaN inside the support")

    monkeypatch.setattr(bounds, "proven_radius", unavailable)
    args = ["--method", "macer", "--noise", "laplace", "--sigma", "0.5"]
    code, _, err = in_process(args, tmp_path, capsys)
    lines = [line for line in err.splitlines() if line.startswith("train.py")]
    expected = (
        "train.py: error: macer cannot build the l2 p_A -> radius curve of laplace (d = 64): "
        "the score is NaN inside the support"
    )
    assert code == 2 and lines == [expected], err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_macer_with_a_non_gaussian_noise_end_to_end(tmp_path, capsys):
    """Builds (or reads) the gennormal(0.75) curve at d = 64: up to a minute on 2 cores."""
    args = ["--method", "macer", *CHEAP["macer"][:2], "--noise", "gennormal", "--beta", "0.75"]
    args += ["--sigma", "0.5", "--model.method_args", '{"start_epoch": 0, "radius": "family"}']
    code, out, err = in_process(args, tmp_path, capsys)
    assert code == 0, err[-2000:]
    assert "Certified accuracy on validation samples" in out


class RecordingModule(UniCRModule):
    """Records, per rank and training step, the clean batch, the rows of every backbone call
    and the step's noise draws (re-drawn from the same RNG state); writes them to
    <record_dir>/rank<r>.json."""

    def __init__(self, record_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.record_dir, self.records = record_dir, []
        self.backbone.register_forward_pre_hook(self._hook)

    def _hook(self, backbone, inputs):
        if self.records and self.records[-1]["open"]:
            self.records[-1]["rows"].append(int(inputs[0].shape[0]))

    def _train_step(self, batch):
        x = batch[0]
        state = torch.get_rng_state()
        noise = self.noise.sample(repeat_copies(x, self.method.m))
        torch.set_rng_state(state)  # the step draws the same noise again
        inputs = [float(v) for v in x.flatten(1).sum(1)]
        self.records.append({"inputs": inputs, "rows": [], "open": True})
        self.records[-1]["noise"] = noise.flatten().tolist()[:16]
        loss = super()._train_step(batch)
        self.records[-1]["open"] = False
        return loss

    def on_train_end(self) -> None:
        path = Path(self.record_dir) / f"rank{self.global_rank}.json"
        path.write_text(json.dumps(self.records))


@pytest.mark.slow
@pytest.mark.parametrize("method,m", [("consistency", 2), ("macer", 3), ("smoothadv", 2)])
def test_ddp_draws_m_copies_of_each_ranks_own_inputs(method, m, tmp_path):
    L.seed_everything(0)  # as train.py: every rank starts from the same seed
    margs = {"macer": {"start_epoch": 0}, "smoothadv": {"steps": 2}}.get(method)
    model = RecordingModule(
        str(tmp_path), backbone="lenet", num_classes=4, input_shape=[1, 8, 8], method=method,
        m=m, method_args=margs,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, limit_train_batches=2,
        limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, UniCRDataModule("synthetic", batch_size=16))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    steps = 2
    passes = 1 + (2 if method == "smoothadv" else 0)  # the PGD steps forward m copies too
    for records in ranks:
        assert len(records) == steps
        for step in records:
            assert step["rows"] == [m * len(step["inputs"])] * passes  # m copies of its share
    for s in range(steps):  # the two ranks hold different inputs and draw different noise
        assert not set(ranks[0][s]["inputs"]) & set(ranks[1][s]["inputs"])
        assert ranks[0][s]["noise"] != ranks[1][s]["noise"]
