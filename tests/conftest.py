"""Test-session set-up: share the machine's cores between pytest-xdist workers.

`pytest` runs the tests on every core at once (`-n auto --dist worksteal` in pyproject.toml: an
idle worker takes queued tests from a busy one, so a file's module fixture, such as a trained
checkpoint, may be built once per worker). Each worker, and every process it starts, then takes
its share of the cores rather than all of them, so that two workers on two cores do not run four
busy threads.
"""

import os

# Lightning gives its logger a handler on the sys.stderr of the moment it is first imported.
# Imported here, that is the real stream; imported inside a test that calls a command's `main`,
# it would be that test's capture, closed afterwards ("--- Logging error ---" in later tests).
import lightning.pytorch  # noqa: F401
import torch


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # for the subprocesses
