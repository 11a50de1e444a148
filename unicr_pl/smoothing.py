"""Smoothed classifier g(x) = argmax_c P(f(x + eps) = c) around any base classifier.

Cohen et al.'s PREDICT and CERTIFY (2019), for any `unicr_pl.noises` noise: the noise is
added in the classifier's *input* space, before its normalisation layer, and the class counts
are gathered in batches of noisy copies (vectorised, no per-draw Python loop), on the device
of the base classifier. Selection (n0) and estimation (n) use separate draws.

Seeded certification packs the draws of every input and both stages into full forward passes
of `batch_size` copies; each draw's value depends only on (seed, index, stage, draw number),
so the counts are those of certifying each input alone. On the hot path nothing goes back to
the host but one copy of the counts per call (and, on CUDA, the rejection samplers' sizes);
autocast (`precision`) wraps the base classifier only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from unicr_pl.noises import Noise

ABSTAIN = -1
DRAW_BLOCK = 128  # draws per seeded block (part of what a seed means: changing it changes rows)


def sample_seed(seed: int, *key: int) -> int:
    """A 64-bit generator seed mixed from (seed, sample index, stage, ...) by numpy's
    SeedSequence, so nearby keys give unrelated streams."""
    if seed < 0 or any(k < 0 for k in key):
        raise ValueError(f"seeds and their keys must be >= 0, got {(seed, *key)}")
    return int(np.random.SeedSequence([int(seed), *map(int, key)]).generate_state(1, np.uint64)[0])


def clopper_pearson_lower(successes: np.ndarray, n: int, alpha0: float) -> np.ndarray:
    """One-sided (1 - alpha0) lower confidence bound of a binomial proportion (0 where none)."""
    k = np.asarray(successes, dtype=np.float64)
    lower = stats.beta.ppf(alpha0, np.maximum(k, 1e-300), n - k + 1)
    return np.where(k > 0, lower, 0.0)


def clopper_pearson_upper(successes: np.ndarray, n: int, alpha0: float) -> np.ndarray:
    """One-sided (1 - alpha0) upper confidence bound of a binomial proportion (1 where all)."""
    k = np.asarray(successes, dtype=np.float64)
    upper = stats.beta.ppf(1 - alpha0, k + 1, np.maximum(n - k, 1e-300))
    return np.where(k < n, upper, 1.0)


def renamed(**names: str):
    """Decorator: a keyword argument given under an old name (old=new) fails with a TypeError
    naming the new one, instead of Python's bare 'unexpected keyword argument'."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in names.items():
                if old in kwargs:
                    raise TypeError(f"{fn.__qualname__}(): '{old}' is now '{new}'")
            return fn(*args, **kwargs)

        return inner

    return wrap


def check_counts_args(n0: int | None = None, n: int | None = None, alpha0: float | None = None):
    """ValueErrors for n0 < 1, n < 1, alpha0 outside (0, 1)."""
    for name, value in (("n0", n0), ("n", n)):
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value}")
    if alpha0 is not None and not (0.0 < alpha0 < 1.0):
        raise ValueError(f"alpha0 must be in (0, 1), got {alpha0}")


@dataclass
class Certificate:
    """CERTIFY's outcome for each input of a batch (numpy arrays of length B)."""

    prediction: np.ndarray  # class, or ABSTAIN (-1)
    p_a: np.ndarray  # lower bound of P(f = c_A); 0 where abstaining
    p_b: np.ndarray  # upper bound of the runner-up (1 - p_a in the binary case)
    counts: np.ndarray  # [B, num_classes] estimation counts


PRECISIONS: dict[str, torch.dtype | None] = {
    "32-true": None,  # no autocast: the rows of every earlier version
    "bf16-mixed": torch.bfloat16,
    "16-mixed": torch.float16,
}


def check_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision name (None for 32-true); ValueError else."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


Piece = tuple[int, int, int]  # (stream, first draw, number of draws) in one forward pass


def pack_passes(sizes: Sequence[int], batch: int) -> list[list[Piece]]:
    """The draws of streams of `sizes` draws each, in order, cut into forward passes of
    `batch` copies (the last one may be shorter): a stream shorter than a pass shares it with
    the next streams, a longer one spans several passes."""
    passes: list[list[Piece]] = [[]]
    room = batch
    for stream, size in enumerate(sizes):
        start = 0
        while start < size:
            if room == 0:
                passes.append([])
                room = batch
            m = min(room, size - start)
            passes[-1].append((stream, start, m))
            start, room = start + m, room - m
    return [p for p in passes if p]


class SmoothedClassifier(nn.Module):
    """g around `base`: logits = base(normalize(x + eps)).

    Args:
        base: any classifier returning logits [N, num_classes].
        noise: the smoothing noise.
        num_classes: number of classes.
        normalize: the input normalisation applied *after* the noise (identity if None).
        batch_size: noisy copies per forward pass.
        precision: "32-true" (default), "bf16-mixed" or "16-mixed": autocast around the base
            classifier's forward only (noise, normalisation and counting stay in float32).
            Mixed precision changes the logits, so the counts may differ from 32-true.
        channels_last: run the base classifier on channels-last 4-D inputs (converts `base`'s
            weights in place). Faster convolutions; the logits may differ in the last bits.
        prefetch: draw the next pass's noise in a worker thread while the classifier runs (CPU
            only; the same draws). It can hide the sampling where a core is idle; on a shared
            2-core machine it changed the wall time by -6% to +3%, hence off by default.
    """

    def __init__(
        self,
        base: nn.Module,
        noise: Noise,
        num_classes: int,
        normalize: nn.Module | None = None,
        batch_size: int = 1000,
        *,
        precision: str = "32-true",
        channels_last: bool = False,
        prefetch: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.base, self.noise, self.num_classes = base, noise, num_classes
        self.normalize = normalize or nn.Identity()
        self.batch_size = int(batch_size)
        self.autocast_dtype = check_precision(precision)
        self.precision, self.channels_last, self.prefetch = precision, channels_last, prefetch
        if channels_last:
            base.to(memory_format=torch.channels_last)

    def classify(self, inputs: torch.Tensor) -> torch.Tensor:
        """f's class for each noisy input (num_classes where a logit is NaN or inf), [N].
        Autocast wraps the base classifier only."""
        z = self.normalize(inputs)
        if self.channels_last and z.dim() == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        dtype = self.autocast_dtype
        with torch.autocast(z.device.type, dtype=dtype, enabled=dtype is not None):
            logits = self.base(z)
        finite = torch.isfinite(logits).all(dim=1)
        # No host synchronisation here: a bad row is counted in an extra class, checked once.
        return torch.where(finite, logits.argmax(dim=1), self.num_classes)

    @torch.no_grad()
    def counts(
        self,
        x: torch.Tensor,
        num: int,
        generator: torch.Generator | None = None,
        first_index: int = 0,
        *,
        seeds: Sequence[int] | None = None,
        indices: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Class counts of f(x + eps) over `num` draws for each input: [B, num_classes].

        With `seeds` (one per input, e.g. from `sample_seed(seed, idx, stage)`) the draws of
        each input come from its own seeded stream, in blocks of DRAW_BLOCK, so they do not
        depend on the batch size, the other inputs of the batch or the process; otherwise they
        come from `generator`. Raises ValueError naming the sample (`indices[i]`, or
        first_index + position in the batch) if the base classifier returns NaN or inf.
        """
        b = x.shape[0]
        if seeds is None:
            out = self._generator_counts(x, num, generator)
        elif len(seeds) != b:
            raise ValueError(f"need one seed per input: {len(seeds)} seeds for {b} inputs")
        else:
            out = self._stream_counts(x, [(i, int(seeds[i]), num) for i in range(b)])
        return self._checked(out, list(range(b)), indices, first_index)

    def _checked(self, out, rows, indices, first_index: int) -> torch.Tensor:
        """`out` without its column of non-finite logits; ValueError naming the first input
        (`rows[k]` for row k of `out`) that had some."""
        bad = out[:, self.num_classes] > 0
        if bool(bad.any()):  # one synchronisation per call, not one per pass
            pos = rows[int(torch.nonzero(bad)[0])]
            i = int(indices[pos]) if indices is not None else pos + first_index
            raise ValueError(f"base classifier returned NaN or inf logits for sample {i}")
        return out[:, : self.num_classes]

    def _generator_counts(self, x, num: int, generator) -> torch.Tensor:
        """Counts from one generator: each pass draws batch_size // B copies of every input."""
        b = x.shape[0]
        out = torch.zeros(b, self.num_classes + 1, dtype=torch.long, device=x.device)
        per_input = max(1, self.batch_size // max(1, b))  # noisy copies of each input per pass
        done = 0
        while done < num:
            m = min(per_input, num - done)
            batch = x.unsqueeze(1).expand(b, m, *x.shape[1:]).reshape(b * m, *x.shape[1:])
            pred = self.classify(batch + self.noise.sample(batch, generator=generator))
            out.scatter_add_(1, pred.view(b, m), pred.new_ones(b, m))
            done += m
        return out

    def _stream_counts(self, x, streams: list[tuple[int, int, int]]) -> torch.Tensor:
        """Counts [S, num_classes + 1] of seeded streams (input row, seed, draws): their draws
        are packed into full passes of batch_size copies, across inputs and stages. Each
        draw's value depends only on (seed, its number), so the counts do not depend on the
        packing (nor, where the base classifier treats rows independently, do its logits)."""
        out = torch.zeros(len(streams), self.num_classes + 1, dtype=torch.long, device=x.device)
        plan = pack_passes([num for *_, num in streams], self.batch_size)
        blocks: dict[int, tuple[int, torch.Tensor]] = {}  # stream -> its last drawn block
        ones = torch.ones(self.batch_size, dtype=torch.long, device=x.device)

        def noisy(pieces: list[Piece]) -> torch.Tensor:
            with torch.no_grad():  # a worker thread does not inherit the grad mode
                return self._noisy_inputs(x, streams, pieces, blocks)

        for pieces, inputs in self._prepared(plan, noisy, x.device):
            pred, pos = self.classify(inputs), 0
            for stream, _, m in pieces:
                out[stream].scatter_add_(0, pred[pos : pos + m], ones[:m])
                pos += m
        return out

    def _noisy_inputs(self, x, streams, pieces: list[Piece], blocks: dict) -> torch.Tensor:
        """One pass's inputs x_i + eps, written straight into one buffer."""
        total = sum(m for *_, m in pieces)
        out = torch.empty((total, *x.shape[1:]), dtype=x.dtype, device=x.device)
        pos = 0
        for stream, start, m in pieces:
            row, seed, num = streams[stream]
            for eps in self._seeded_draws(x[row], seed, start, m, blocks, stream):
                torch.add(x[row], eps, out=out[pos : pos + len(eps)])
                pos += len(eps)
            if start + m == num:
                blocks.pop(stream, None)  # the stream is done: free its block
        return out

    def _prepared(self, plan: list[list[Piece]], make, device: torch.device):
        """(pieces, inputs) for each pass. With `prefetch` (CPU) the next pass's noise is drawn
        in a worker thread while the classifier runs here; the draws are the same (each block
        has its own generator). On CUDA the host already runs ahead of the device."""
        if not self.prefetch or device.type != "cpu" or len(plan) < 2:
            for pieces in plan:
                yield pieces, make(pieces)
            return
        with ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(make, plan[0])
            for k, pieces in enumerate(plan):
                inputs = ahead.result()
                if k + 1 < len(plan):
                    ahead = pool.submit(make, plan[k + 1])
                yield pieces, inputs

    def _seeded_draws(self, xi, seed: int, start: int, m: int, blocks: dict, key: int):
        """Draws start .. start + m - 1 of the stream `seed`, as slices: block j is DRAW_BLOCK
        draws from a generator seeded by (seed, j), drawn whole, so any split into passes gives
        the same values."""
        pos = start
        while pos < start + m:
            j = pos // DRAW_BLOCK
            if key not in blocks or blocks[key][0] != j:
                gen = torch.Generator(device=xi.device).manual_seed(sample_seed(seed, j))
                shape = (DRAW_BLOCK, *xi.shape)
                blocks[key] = (j, self.noise.sample(shape, gen, xi.device, xi.dtype))
            lo, hi = pos - j * DRAW_BLOCK, min(start + m - j * DRAW_BLOCK, DRAW_BLOCK)
            yield blocks[key][1][lo:hi]
            pos += hi - lo

    @renamed(alpha="alpha0 (the failure probability; alpha is the noise scale)")
    def predict(
        self, x: torch.Tensor, n: int, alpha0: float, generator: torch.Generator | None = None
    ) -> np.ndarray:
        """PREDICT: the top class, or ABSTAIN where a two-sided binomial test of the top two
        counts does not reject equality at level alpha0. Returns [B] ints."""
        check_counts_args(n=n, alpha0=alpha0)
        counts = self.counts(x, n, generator).cpu().numpy()
        top2 = np.argsort(-counts, axis=1, kind="stable")[:, :2]
        n_a = np.take_along_axis(counts, top2[:, :1], 1)[:, 0]
        n_b = np.take_along_axis(counts, top2[:, 1:], 1)[:, 0]
        p_values = np.array(
            [
                stats.binomtest(int(a), int(a + bb), 0.5).pvalue
                for a, bb in zip(n_a, n_b, strict=True)
            ]
        )
        return np.where(p_values <= alpha0, top2[:, 0], ABSTAIN)

    @renamed(alpha="alpha0 (the failure probability; alpha is the noise scale)")
    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha0: float,
        generator: torch.Generator | None = None,
        multiclass: bool = False,
        first_index: int = 0,
        *,
        seed: int | None = None,
        indices: Sequence[int] | None = None,
    ) -> Certificate:
        """CERTIFY: guess c_A on n0 draws, bound its probability on n fresh draws.

        Binary: p_A is the one-sided Clopper-Pearson lower bound at alpha0 and p_B = 1 - p_A.
        Multi-class: the confidence is split (alpha0 / 2 each) between the lower bound of p_A and
        the upper bound of the runner-up's probability p_B. Abstain where p_A <= 1/2 (binary)
        or p_A <= p_B (multi-class).

        With `seed`, the draws of each input are seeded by (seed, its index in `indices`,
        stage): stage 0 the n0 selection draws, stage 1 the n estimation draws; the rows are
        then the same whatever the batching, sharding or resuming. Otherwise `generator` gives
        the n0 draws, then the n draws.
        """
        check_counts_args(n0=n0, n=n, alpha0=alpha0)
        if indices is None:
            indices = range(first_index, first_index + x.shape[0])
        if seed is None:
            guess = self.counts(x, n0, generator, first_index, indices=indices)
            guess = guess.argmax(dim=1).cpu().numpy()
            counts = self.counts(x, n, generator, first_index, indices=indices).cpu().numpy()
        else:  # both stages of every input in one packed run, one copy to the host
            both = self._seeded_counts(x, seed, indices, n0, n)
            guess, counts = both[0].argmax(dim=1).numpy(), both[1].numpy()
        n_a = counts[np.arange(len(guess)), guess]
        if multiclass:
            others = counts.copy()
            others[np.arange(len(guess)), guess] = -1
            p_a = clopper_pearson_lower(n_a, n, alpha0 / 2)
            p_b = clopper_pearson_upper(others.max(axis=1), n, alpha0 / 2)
            certified = p_a > p_b
        else:
            p_a = clopper_pearson_lower(n_a, n, alpha0)
            p_b = 1 - p_a
            certified = p_a > 0.5
        prediction = np.where(certified, guess, ABSTAIN)
        return Certificate(
            prediction, np.where(certified, p_a, 0.0), np.where(certified, p_b, 1.0), counts
        )

    @torch.no_grad()
    def _seeded_counts(self, x, seed: int, indices: Sequence[int], n0: int, n: int):
        """Selection and estimation counts [2, B, num_classes] of seeded CERTIFY, on CPU."""
        b, keys = x.shape[0], [int(i) for i in indices]
        streams = [
            (i, sample_seed(seed, keys[i], stage), num)
            for stage, num in ((0, n0), (1, n))
            for i in range(b)
        ]
        out = self._stream_counts(x, streams).cpu()  # the one copy to the host
        return self._checked(out, [*range(b)] * 2, keys, 0).view(2, b, self.num_classes)


__all__ = [
    "ABSTAIN",
    "PRECISIONS",
    "Certificate",
    "SmoothedClassifier",
    "check_precision",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "pack_passes",
    "sample_seed",
]
