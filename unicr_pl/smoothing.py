"""Smoothed classifier g(x) = argmax_c P(f(x + eps) = c) around any base classifier.

Cohen et al.'s PREDICT and CERTIFY (2019), for any `unicr_pl.noises` noise: the noise is
added in the classifier's *input* space, before its normalisation layer, and the class counts
are gathered in batches of noisy copies (vectorised, no per-draw Python loop), on the device
of the base classifier. Selection (n0) and estimation (n) use separate draws.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def clopper_pearson_lower(successes: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) lower confidence bound of a binomial proportion (0 where none)."""
    k = np.asarray(successes, dtype=np.float64)
    lower = stats.beta.ppf(alpha, np.maximum(k, 1e-300), n - k + 1)
    return np.where(k > 0, lower, 0.0)


def clopper_pearson_upper(successes: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) upper confidence bound of a binomial proportion (1 where all)."""
    k = np.asarray(successes, dtype=np.float64)
    upper = stats.beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-300))
    return np.where(k < n, upper, 1.0)


def check_counts_args(n0: int | None = None, n: int | None = None, alpha: float | None = None):
    """ValueErrors for n0 < 1, n < 1, alpha outside (0, 1)."""
    for name, value in (("n0", n0), ("n", n)):
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value}")
    if alpha is not None and not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


@dataclass
class Certificate:
    """CERTIFY's outcome for each input of a batch (numpy arrays of length B)."""

    prediction: np.ndarray  # class, or ABSTAIN (-1)
    p_a: np.ndarray  # lower bound of P(f = c_A); 0 where abstaining
    p_b: np.ndarray  # upper bound of the runner-up (1 - p_a in the binary case)
    counts: np.ndarray  # [B, num_classes] estimation counts


class SmoothedClassifier(nn.Module):
    """g around `base`: logits = base(normalize(x + eps)).

    Args:
        base: any classifier returning logits [N, num_classes].
        noise: the smoothing noise.
        num_classes: number of classes.
        normalize: the input normalisation applied *after* the noise (identity if None).
        batch_size: noisy copies per forward pass.
    """

    def __init__(
        self,
        base: nn.Module,
        noise: Noise,
        num_classes: int,
        normalize: nn.Module | None = None,
        batch_size: int = 1000,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.base, self.noise, self.num_classes = base, noise, num_classes
        self.normalize = normalize or nn.Identity()
        self.batch_size = int(batch_size)

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
        if seeds is not None and len(seeds) != b:
            raise ValueError(f"need one seed per input: {len(seeds)} seeds for {b} inputs")
        out = torch.zeros(b, self.num_classes, dtype=torch.long, device=x.device)
        per_input = max(1, self.batch_size // max(1, b))  # noisy copies of each input per pass
        blocks: dict[int, tuple[int, torch.Tensor]] = {}  # input -> its last drawn block
        done = 0
        while done < num:
            m = min(per_input, num - done)
            batch = x.unsqueeze(1).expand(b, m, *x.shape[1:]).reshape(b * m, *x.shape[1:])
            if seeds is None:
                noise = self.noise.sample(batch, generator=generator)
            else:
                noise = torch.cat(
                    [self._seeded_draws(x[i], seeds[i], done, m, blocks, i) for i in range(b)]
                )
            logits = self.base(self.normalize(batch + noise))  # [b * m, num_classes]
            bad = ~torch.isfinite(logits).all(dim=1).view(b, m).all(dim=1)
            if bad.any():
                pos = int(torch.nonzero(bad)[0])
                i = int(indices[pos]) if indices is not None else pos + first_index
                raise ValueError(f"base classifier returned NaN or inf logits for sample {i}")
            pred = logits.argmax(dim=1).view(b, m)
            out += torch.nn.functional.one_hot(pred, self.num_classes).sum(dim=1)
            done += m
        return out

    def _seeded_draws(self, xi, seed: int, start: int, m: int, blocks: dict, key: int):
        """Draws start .. start + m - 1 of the stream `seed`: block j is DRAW_BLOCK draws from
        a generator seeded by (seed, j), drawn whole, so any split into passes gives the same
        values."""
        parts, pos = [], start
        while pos < start + m:
            j = pos // DRAW_BLOCK
            if key not in blocks or blocks[key][0] != j:
                gen = torch.Generator(device=xi.device).manual_seed(sample_seed(seed, j))
                shape = (DRAW_BLOCK, *xi.shape)
                blocks[key] = (j, self.noise.sample(shape, gen, xi.device, xi.dtype))
            lo, hi = pos - j * DRAW_BLOCK, min(start + m - j * DRAW_BLOCK, DRAW_BLOCK)
            parts.append(blocks[key][1][lo:hi])
            pos += hi - lo
        return torch.cat(parts)

    def predict(
        self, x: torch.Tensor, n: int, alpha: float, generator: torch.Generator | None = None
    ) -> np.ndarray:
        """PREDICT: the top class, or ABSTAIN where a two-sided binomial test of the top two
        counts does not reject equality at level alpha. Returns [B] ints."""
        check_counts_args(n=n, alpha=alpha)
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
        return np.where(p_values <= alpha, top2[:, 0], ABSTAIN)

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        generator: torch.Generator | None = None,
        multiclass: bool = False,
        first_index: int = 0,
        *,
        seed: int | None = None,
        indices: Sequence[int] | None = None,
    ) -> Certificate:
        """CERTIFY: guess c_A on n0 draws, bound its probability on n fresh draws.

        Binary: p_A is the one-sided Clopper-Pearson lower bound at alpha and p_B = 1 - p_A.
        Multi-class: the confidence is split (alpha / 2 each) between the lower bound of p_A and
        the upper bound of the runner-up's probability p_B. Abstain where p_A <= 1/2 (binary)
        or p_A <= p_B (multi-class).

        With `seed`, the draws of each input are seeded by (seed, its index in `indices`,
        stage): stage 0 the n0 selection draws, stage 1 the n estimation draws; the rows are
        then the same whatever the batching, sharding or resuming. Otherwise `generator` gives
        the n0 draws, then the n draws.
        """
        check_counts_args(n0=n0, n=n, alpha=alpha)
        if indices is None:
            indices = range(first_index, first_index + x.shape[0])
        sel = est = None
        if seed is not None:
            sel = [sample_seed(seed, int(i), 0) for i in indices]
            est = [sample_seed(seed, int(i), 1) for i in indices]
        guess = self.counts(x, n0, generator, seeds=sel, indices=indices)
        guess = guess.argmax(dim=1).cpu().numpy()
        counts = self.counts(x, n, generator, seeds=est, indices=indices).cpu().numpy()
        n_a = counts[np.arange(len(guess)), guess]
        if multiclass:
            others = counts.copy()
            others[np.arange(len(guess)), guess] = -1
            p_a = clopper_pearson_lower(n_a, n, alpha / 2)
            p_b = clopper_pearson_upper(others.max(axis=1), n, alpha / 2)
            certified = p_a > p_b
        else:
            p_a = clopper_pearson_lower(n_a, n, alpha)
            p_b = 1 - p_a
            certified = p_a > 0.5
        prediction = np.where(certified, guess, ABSTAIN)
        return Certificate(
            prediction, np.where(certified, p_a, 0.0), np.where(certified, p_b, 1.0), counts
        )


def seeded_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A torch.Generator on `device`, seeded (random seed if None)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) if seed is not None else int(torch.seed() % (2**63)))
    return gen


__all__ = [
    "ABSTAIN",
    "Certificate",
    "SmoothedClassifier",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "sample_seed",
    "seeded_generator",
]
