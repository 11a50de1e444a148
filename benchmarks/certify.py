"""Certification throughput and its forward share, side by side in one run.

    python benchmarks/certify.py [--device cuda] [--images 4] [--n 2000] [--batch 1000]
        [--backbones lenet resnet20] [--noises gaussian gennormal expmix custom]
        [--precision 32-true] [--channels_last] [--prefetch]

Certification here is what `certify.py certify` does (CertifyTask.predict_step, with
batch // n images per step when n < batch): n0 + n seeded noisy copies per image packed into
passes of `batch`, Clopper-Pearson, radii for l1, l2, l_inf, one flushed TSV row per image. The
bare loop pushes the same passes through the same classifier (same precision and layout), on
noisy copies drawn beforehand, with no sampling and no bookkeeping. Reported, per backbone and
noise:

* seconds per image and images per second (wall clock);
* forward share (wall) = bare loop / certification, the speed of certification relative to
  the classifier alone (`--prefetch` draws the noise in a worker thread, beside the forward);
* forward share (CPU, CPU only) = the classifier's CPU time over the process's CPU time while
  certifying, every thread included: what the sampling costs, overlapped or not.

Each figure is the best of --reps alternating repetitions (other processes only slow things).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings

import torch

from unicr_pl.lightning.certify import CertifyTask
from unicr_pl.lightning.module import UniCRModule
from unicr_pl.noises import Noise, create_noise
from unicr_pl.results import ResultWriter
from unicr_pl.smoothing import SmoothedClassifier, pack_passes

SHAPES = {"lenet": [1, 28, 28], "mlp": [1, 28, 28], "resnet20": [3, 32, 32]}


def peaked(y: torch.Tensor) -> torch.Tensor:
    """The custom density of the benchmark: exp(-|y|^1.5) (tabulated, inverse-CDF sampling)."""
    return -(y.abs() ** 1.5)


NOISES = {
    "gaussian": lambda: create_noise("gaussian", sigma=0.5),
    "laplace": lambda: create_noise("laplace", sigma=0.5),
    "gennormal": lambda: create_noise("gennormal", sigma=0.5, beta=0.75),
    "expmix": lambda: create_noise("expmix", sigma=0.5, beta=0.5),
    "custom": lambda: create_noise("custom", sigma=0.5, log_density=peaked),
}


def make_model(backbone: str, device: torch.device) -> UniCRModule:
    """A randomly initialised classifier (speed does not depend on the weights)."""
    shape = SHAPES[backbone]
    model = UniCRModule(backbone, 10, shape, [0.5] * shape[0], [0.25] * shape[0], sigma=0.5)
    return model.to(device).eval()


class ForwardClock:
    """CPU time spent inside a module's forward, read by `clock` in its hooks.

    time.process_time counts torch's intra-op threads, which do the forward's work beside the
    calling thread (time.thread_time alone read 48% for a forward that was all the work, with
    2 threads); it is right while nothing else runs during a forward. With --prefetch the
    sampler thread does, so that case reads the calling thread only (exact with 1 thread).
    """

    def __init__(self, module: torch.nn.Module, clock=time.process_time) -> None:
        self.seconds, self._start, self._clock = 0.0, [], clock
        module.register_forward_pre_hook(lambda *_: self._start.append(self._clock()))
        module.register_forward_hook(lambda *_: self._stop())

    def _stop(self) -> None:
        self.seconds += self._clock() - self._start.pop()


def measure(
    backbone: str,
    noise: str | Noise,
    device: torch.device,
    images: int = 4,
    n0: int = 100,
    n: int = 2000,
    batch: int = 1000,
    precision: str = "32-true",
    channels_last: bool = False,
    reps: int = 2,
    full: bool = True,
    prefetch: bool = False,
) -> dict:
    """Certification against the bare classifier for one setting (`noise`: a name in NOISES, or
    a Noise); see the module docstring.
    `full=False` times `SmoothedClassifier.certify` alone (no radius look-up, no TSV row: CPU
    work of microseconds per image, but a non-Gaussian noise's curves must first be built)."""
    label = noise if isinstance(noise, str) else noise.describe()
    model, noise = make_model(backbone, device), NOISES[noise]() if label == noise else noise
    x = torch.rand(images, *SHAPES[backbone], device=device)
    per_step = max(1, batch // n)  # as `certify.py certify`
    steps = [list(range(i, min(i + per_step, images))) for i in range(0, images, per_step)]
    batches = [(torch.tensor(i), x[i], torch.zeros(len(i), dtype=torch.long)) for i in steps]
    kwargs = {"precision": precision, "channels_last": channels_last}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        smoothed, step, close = certifier(model, noise, n0, n, batch, kwargs, full, tmp)
        smoothed.prefetch = prefetch

        def certify() -> None:
            for b in batches:
                step(*b)

        # Noisy copies drawn once: the classifier is ~10% faster on copies of one clean image
        # (max-pooling's branches predict well), so those would flatter the bare loop.
        gen = torch.Generator(device=device).manual_seed(0)
        noisy = x[:1] + noise.sample((batch, *x.shape[1:]), gen, device)

        def bare() -> None:  # the same passes through the same classifier, no sampling
            for ids in steps:
                for pieces in pack_passes([n0] * len(ids) + [n] * len(ids), batch):
                    smoothed.classify(noisy[: sum(m for *_, m in pieces)])

        certify()  # warm-up: kernels, the noise's tables, the radius curves
        clock = ForwardClock(model.backbone, time.thread_time if prefetch else time.process_time)
        best = best_of({"certify": certify, "bare": bare}, reps, device, clock)
        syncs = count_syncs(certify) / images if device.type == "cuda" else None
        close()
    (wall, cpu, fwd), bare_wall = best["certify"], best["bare"][0]
    return {
        "backbone": backbone,
        "noise": label,
        "device": device.type,
        "precision": precision,
        "channels_last": channels_last,
        "radii": full,
        "prefetch": prefetch,
        "n": n,
        "s_per_image": wall / images,
        "images_per_s": images / wall,
        "share_wall": bare_wall / wall,
        "share_cpu": fwd / cpu if device.type == "cpu" else None,
        "syncs_per_image": syncs,
    }


def certifier(model, noise, n0: int, n: int, batch: int, kwargs: dict, full: bool, tmp: str):
    """(the smoothed classifier, a function certifying one step (idx, x, y), a closer):
    CertifyTask.predict_step with its TSV writer, or `SmoothedClassifier.certify` alone."""
    if not full:
        g = SmoothedClassifier(model.backbone, noise, 10, model.normalize, batch, **kwargs)
        g.to(model.device)

        def step(idx, x, y) -> None:
            g.certify(x, n0, n, 0.001, seed=0, indices=idx.tolist())

        return g, step, lambda: None
    task = CertifyTask(
        model, noise, n0, n, 0.001, batch, [1.0, 2.0, math.inf], False, 0, f"{tmp}/b.tsv", {},
        **kwargs,
    ).to(model.device)  # fmt: skip
    task.writer = ResultWriter(f"{tmp}/b.tsv", task.norms, task.settings, task.extra)
    return task.smoothed, lambda *b: task.predict_step(b, 0), task.writer.close


def best_of(fns: dict, reps: int, device: torch.device, clock: ForwardClock) -> dict:
    """{name: (wall s, process CPU s, CPU s in the clocked forward)} of the fastest of `reps`
    alternating runs of each function."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = {}
    for _ in range(reps):
        for name, fn in fns.items():
            clock.seconds = 0.0
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu, clock.seconds)
    return best


def count_syncs(fn) -> int:
    """Host synchronisations (torch's sync debug mode warnings) while `fn` runs (CUDA)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
            torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


HEADER = (
    "| backbone | noise | device | precision | channels_last | radii + TSV | n | s/image "
    "| images/s | forward share (wall) | forward share (CPU) | host syncs/image |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(r: dict) -> str:
    cpu = f"{r['share_cpu']:.1%}" if r["share_cpu"] is not None else "-"
    syncs = f"{r['syncs_per_image']:.1f}" if r["syncs_per_image"] is not None else "-"
    return (
        f"| {r['backbone']} | {r['noise']} | {r['device']} | {r['precision']} | "
        f"{'on' if r['channels_last'] else 'off'} | {'yes' if r['radii'] else 'no'} | "
        f"{r['n']} | {r['s_per_image']:.3f} | "
        f"{r['images_per_s']:.2f} | {r['share_wall']:.1%} | {cpu} | {syncs} |"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--backbones", nargs="+", default=["lenet"], choices=sorted(SHAPES))
    p.add_argument("--noises", nargs="+", default=list(NOISES), choices=list(NOISES))
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--prefetch", action="store_true", help="draw the noise in a worker thread")
    return p


def main() -> None:
    args = parser().parse_args()
    device = torch.device(args.device)
    print(f"torch threads: {torch.get_num_threads()}, device: {device}")
    print(HEADER)
    for backbone in args.backbones:
        for noise in args.noises:
            r = measure(
                backbone, noise, device, args.images, args.n0, args.n, args.batch,
                args.precision, args.channels_last, args.reps, prefetch=args.prefetch,
            )  # fmt: skip
            print(table_row(r), flush=True)


if __name__ == "__main__":
    main()
