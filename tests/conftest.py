"""Test-session set-up: share the machine's cores between pytest-xdist workers.

`pytest` runs the files on every core at once (`-n auto --dist loadfile` in pyproject.toml: a
file's module fixtures, such as a trained checkpoint, are built once, on one worker). Each
worker, and every process it starts, then takes its share of the cores rather than all of them,
so that two workers on two cores do not run four busy threads.
"""

import os

import torch


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # for the subprocesses
