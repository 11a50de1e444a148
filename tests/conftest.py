"""Test-session set-up: share the machine's cores between pytest-xdist workers, and one tiny
digits checkpoint (`digits_ckpt`) for the tests that run `certify.py certify` in process.

`pytest` runs the tests on every core at once (`-n auto --dist worksteal` in pyproject.toml: an
idle worker takes queued tests from a busy one, so a file's module fixture, such as a trained
checkpoint, may be built once per worker). Each worker, and every process it starts, then takes
its share of the cores rather than all of them, so that two workers on two cores do not run four
busy threads.
"""

import logging
import os
import sys

# Lightning gives its logger a handler on the sys.stderr of the moment it is first imported.
# Imported here, that is the real stream; imported inside a test that calls a command's `main`,
# it would be that test's capture, closed afterwards ("--- Logging error ---" in later tests).
import lightning.pytorch  # noqa: F401
import pytest
import torch


def pytest_configure(config):
    # mutmut runs pytest several times in one process: the stream Lightning's handler got at
    # import (the first session's capture) is closed by then.
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream.closed:
                handler.stream = sys.__stderr__  # not setStream: it flushes the closed one
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # for the subprocesses


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory) -> str:
    """A train.py-style checkpoint of a tiny MLP on sklearn's digits (Gaussian noise, sigma =
    0.25), a few SGD steps: seconds, in this process, once per worker."""
    import lightning as L

    from unicr_pl.lightning import UniCRDataModule, UniCRModule

    L.seed_everything(0, verbose=False)  # the same weights in every run
    data = UniCRDataModule("digits", batch_size=64)
    spec = data.spec
    model = UniCRModule(
        "mlp", spec.num_classes, list(spec.input_shape), list(spec.mean), list(spec.std),
        sigma=0.25,
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return str(path)
