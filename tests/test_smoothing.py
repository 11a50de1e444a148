"""Smoothed classifier: Clopper-Pearson bounds, PREDICT/CERTIFY on classifiers with known laws."""

import math
import threading

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from unicr_pl.noises import create_noise
from unicr_pl.radius import closed_forms as cf
from unicr_pl.smoothing import (
    ABSTAIN,
    DRAW_BLOCK,
    PRECISIONS,
    SmoothedClassifier,
    check_counts_args,
    clopper_pearson_lower,
    clopper_pearson_upper,
    pack_passes,
    sample_seed,
)


class Halfspace(nn.Module):
    """f(x) = 1 if x_0 > 0 else 0: under N(0, s^2) noise, P(f(x + eps) = 1) = Phi(x_0 / s)."""

    def forward(self, x):
        z = x.flatten(1)[:, :1]
        return torch.cat([-z, z], dim=1)


def test_clopper_pearson_matches_scipy_exact_interval():
    n, alpha0 = 1000, 0.001
    for k in (0, 1, 500, 990, 1000):
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha0, method="exact")
        assert math.isclose(clopper_pearson_lower(k, n, alpha0), ci.low, abs_tol=1e-12)
        assert math.isclose(clopper_pearson_upper(k, n, alpha0), ci.high, abs_tol=1e-12)


def test_certify_halfspace_is_sound_and_tight():
    sigma, n, alpha0 = 0.5, 20_000, 0.001
    g = SmoothedClassifier(Halfspace(), create_noise("gaussian", sigma=sigma), 2, batch_size=4000)
    x = torch.zeros(3, 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor([0.2, 0.6, -0.4])
    gen = torch.Generator().manual_seed(0)
    cert = g.certify(x, n0=100, n=n, alpha0=alpha0, generator=gen)
    assert list(cert.prediction) == [1, 1, 0]
    true_p = stats.norm.cdf(np.abs([0.2, 0.6, -0.4]) / sigma)
    assert np.all(cert.p_a <= true_p) and np.all(cert.p_a > true_p - 0.02)
    # The certified radius never exceeds the true distance to g's decision boundary |x_0|.
    radius = np.array([cf.cohen_l2(sigma, p) for p in cert.p_a])
    assert np.all(radius <= np.abs([0.2, 0.6, -0.4]))
    np.testing.assert_allclose(cert.p_a, clopper_pearson_lower(cert.counts.max(1), n, alpha0))


def test_noise_is_added_before_normalisation():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 2)

    class Normalize(nn.Module):
        def forward(self, x):
            return (x - 0.5) / 0.25

    g = SmoothedClassifier(Spy(), create_noise("gaussian", sigma=0.1), 2, Normalize(), 500)
    g.counts(torch.full((1, 1, 8, 8), 0.5), 500, torch.Generator().manual_seed(1))
    inputs = torch.cat(seen)
    assert abs(float(inputs.std()) - 0.1 / 0.25) < 0.02  # the noise went through the scaling


def test_predict_abstains_on_a_coin_flip_and_counts_are_seedable():
    g = SmoothedClassifier(Halfspace(), create_noise("laplace", sigma=1.0), 2, batch_size=256)
    x = torch.zeros(2, 3)
    pred = g.predict(x, n=400, alpha0=0.001, generator=torch.Generator().manual_seed(2))
    assert np.all(pred == ABSTAIN)
    a = g.counts(x, 300, torch.Generator().manual_seed(3))
    b = g.counts(x, 300, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and int(a.sum()) == 600


def test_multiclass_splits_the_confidence():
    g = SmoothedClassifier(Halfspace(), create_noise("gaussian", sigma=1.0), 2, batch_size=1000)
    x = torch.zeros(1, 2)
    x[0, 0] = 1.5
    cert = g.certify(x, 50, 5000, 0.01, torch.Generator().manual_seed(4), multiclass=True)
    n_a = cert.counts[0].max()
    assert math.isclose(cert.p_a[0], clopper_pearson_lower(n_a, 5000, 0.005))
    assert math.isclose(cert.p_b[0], clopper_pearson_upper(5000 - n_a, 5000, 0.005))


def test_nan_logits_name_the_sample():
    class Broken(nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 2)
            out[x[:, 0] > 100] = float("nan")
            return out

    g = SmoothedClassifier(Broken(), create_noise("gaussian", sigma=0.01), 2)
    x = torch.tensor([[0.0], [1000.0]])
    with pytest.raises(ValueError, match="NaN or inf logits for sample 8"):
        g.certify(x, 10, 10, 0.01, first_index=7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n0": 0}, "n0 must be"),
        ({"n": 0}, "n must be"),
        ({"alpha0": 0.0}, "alpha0 must be"),
        ({"alpha0": 1.0}, "alpha0 must be"),
    ],
)
def test_bad_certify_arguments(kwargs, message):
    g = SmoothedClassifier(Halfspace(), create_noise("gaussian"), 2)
    args = {"n0": 10, "n": 10, "alpha0": 0.01, **kwargs}
    with pytest.raises(ValueError, match=message):
        g.certify(torch.zeros(1, 2), **args)


# ---- packed passes, precision, channels-last, prefetch (issue #15, item 5) ----


def small_lenet() -> nn.Module:
    """A LeNet for 8x8 inputs (real convolutions and pooling), random weights."""
    from unicr_pl.backbones import create_backbone

    torch.manual_seed(0)
    return create_backbone("lenet", 10, [1, 8, 8]).eval()


@pytest.mark.parametrize("noise", ["gaussian", "gennormal"])
def test_packed_certify_equals_per_image_counts(noise):
    """n smaller than the batch: the draws of several images (both stages) share a forward
    pass; every image's counts are those of certifying it alone, with any batch size."""
    net, x = small_lenet(), torch.rand(5, 1, 8, 8)
    nz = create_noise(noise, sigma=0.5, **({"beta": 0.75} if noise == "gennormal" else {}))
    idx = [3, 17, 4, 250, 9]
    packed = SmoothedClassifier(net, nz, 10, batch_size=500).certify(
        x, 30, 170, 0.01, seed=11, indices=idx
    )
    for batch in (1000, 129, 7):  # whole, blocks split across passes, many passes
        alone = SmoothedClassifier(net, nz, 10, batch_size=batch, prefetch=batch == 129)
        rows = [alone.certify(x[i : i + 1], 30, 170, 0.01, seed=11, indices=[k]) for i, k in
                enumerate(idx)]  # fmt: skip
        assert np.array_equal(packed.counts, np.concatenate([r.counts for r in rows]))
        assert np.array_equal(packed.prediction, np.concatenate([r.prediction for r in rows]))
    assert packed.counts.sum(axis=1).tolist() == [170] * 5


def test_pack_passes_covers_every_draw_once_in_full_passes():
    sizes, batch = [30, 170, 1, 0, 500, 44], 128
    plan = pack_passes(sizes, batch)
    assert [sum(m for *_, m in p) for p in plan[:-1]] == [batch] * (len(plan) - 1)
    seen = {s: [] for s in range(len(sizes))}
    for p in plan:
        for s, start, m in p:
            seen[s] += range(start, start + m)
    assert all(seen[s] == list(range(size)) for s, size in enumerate(sizes))


class DtypeSpy(nn.Module):
    """Records the autocast state and the weight's compute dtype of each forward."""

    def __init__(self):
        super().__init__()
        self.lin, self.seen = nn.Linear(4, 3), []

    def forward(self, x):
        out = self.lin(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), x.dtype, out.dtype))
        return out


class SpyNoise:
    """A Gaussian that records whether autocast was on while it drew."""

    def __init__(self):
        self.inner, self.autocast = create_noise("gaussian", sigma=0.3), []

    def sample(self, *args, **kwargs):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return self.inner.sample(*args, **kwargs)


@pytest.mark.parametrize(("precision", "dtype"), [("32-true", None), ("bf16-mixed", "bf16")])
def test_autocast_wraps_the_classifier_only(precision, dtype):
    spy, noise = DtypeSpy(), SpyNoise()
    g = SmoothedClassifier(spy, noise, 3, batch_size=64, precision=precision)
    cert = g.certify(torch.zeros(2, 4), 10, 100, 0.01, seed=0)
    assert cert.counts.sum() == 200 and noise.autocast and not any(noise.autocast)
    on, x_dtype, out_dtype = spy.seen[-1]
    assert x_dtype == torch.float32  # noise and normalisation stay in float32
    assert on == (dtype is not None)
    assert out_dtype == (torch.bfloat16 if dtype else torch.float32)


def test_bad_precision_and_channels_last():
    with pytest.raises(ValueError, match="precision must be one of 32-true"):
        SmoothedClassifier(Halfspace(), create_noise("gaussian"), 2, precision="bf16")
    net = small_lenet()
    g = SmoothedClassifier(net, create_noise("gaussian", sigma=0.25), 10, channels_last=True)
    assert net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    cert = g.certify(torch.rand(2, 1, 8, 8), 10, 100, 0.01, seed=0)
    assert cert.counts.sum() == 200


def test_prefetch_under_inference_mode_and_nan_names_the_sample():
    """Lightning predicts under inference_mode; the worker thread must cope. A NaN found in
    a packed pass still names the dataset index of its input."""
    net, x = small_lenet(), torch.rand(3, 1, 8, 8)
    x[1, 0, 0, 0] = float("nan")
    g = SmoothedClassifier(
        net, create_noise("laplace", sigma=0.25), 10, batch_size=64, prefetch=True
    )
    with torch.inference_mode():
        ok = g.certify(x[[0, 2]], 20, 200, 0.01, seed=1, indices=[4, 6])
        with pytest.raises(ValueError, match="NaN or inf logits for sample 5"):
            g.certify(x, 20, 200, 0.01, seed=1, indices=[4, 5, 6])
    g.prefetch = False
    again = g.certify(x[[0, 2]], 20, 200, 0.01, seed=1, indices=[4, 6])
    assert np.array_equal(ok.counts, again.counts)


def test_precision_is_a_setting_of_the_result_file(tmp_path):
    """A resume with another precision is refused; a file written before the setting existed
    (no key in its manifest) resumes at 32-true."""
    from unicr_pl.results import ResultWriter, read_manifest

    path, base = tmp_path / "r.tsv", {"n": 100, "seed": 0}
    row = {"idx": 0, "label": 1, "predict": 1, "radius": 0.5, "correct": 1, "time": 0.1,
           "p_a": 0.9, "p_b": 0.1, "radius_l2": 0.5}  # fmt: skip
    writer = ResultWriter(path, [2.0], base)  # an older file: no precision key
    writer.write(row)
    writer.close()
    now = {**base, "precision": "32-true", "channels_last": False}
    ResultWriter(path, [2.0], now).close()
    assert read_manifest(path)["precision"] == "32-true"
    with pytest.raises(ValueError, match=r"other settings \(precision\)"):
        ResultWriter(path, [2.0], {**now, "precision": "bf16-mixed"})


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("gaussian", {}, [[476, 524], [626, 374]]),
        ("gennormal", {"beta": 0.75}, [[403, 597], [698, 302]]),
        ("expmix", {"beta": 0.5}, [[440, 560], [603, 397]]),
        ("custom", {"log_density": lambda y: -(y.abs() ** 1.5)}, [[428, 572], [655, 345]]),
    ],
)
def test_seeded_rows_are_those_of_earlier_versions(name, params, expected):
    """Same seed, same rows across versions: counts computed with the code before the packed
    passes and the faster samplers (the sign of the first coordinate of x + eps)."""
    x = torch.zeros(2, 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor([0.1, -0.3])
    g = SmoothedClassifier(Halfspace(), create_noise(name, sigma=1.0, **params), 2, batch_size=100)
    assert g.certify(x, 50, 1000, 0.01, seed=5, indices=[7, 123]).counts.tolist() == expected


def test_one_non_finite_logit_among_all_draws_is_caught():
    """A single NaN row in thousands of draws still stops certification (a count threshold
    above one would let it through)."""

    class OnceNaN(nn.Module):
        calls = 0

        def forward(self, x):
            out = torch.zeros(x.shape[0], 2)
            if OnceNaN.calls == 0:
                out[0, 0] = float("nan")
            OnceNaN.calls += 1
            return out

    g = SmoothedClassifier(OnceNaN(), create_noise("gaussian", sigma=0.1), 2, batch_size=100)
    with pytest.raises(ValueError, match="NaN or inf logits for sample 5"):  # 0 + first_index
        g.counts(torch.zeros(2, 1), 1000, torch.Generator().manual_seed(0), first_index=5)


def test_noise_is_added_to_the_input_not_subtracted(monkeypatch):
    """With a one-sided noise (|eps|) every copy of x = 0 lies at x > 0: class 1 of the
    halfspace on both sampling paths (generator and seeded streams)."""
    noise = create_noise("gaussian", sigma=1.0)
    one_sided = noise._sample_std
    monkeypatch.setattr(noise, "_sample_std", lambda *args: one_sided(*args).abs() + 1e-3)
    g = SmoothedClassifier(Halfspace(), noise, 2, batch_size=64)
    x = torch.zeros(2, 4)
    for counts in (
        g.counts(x, 200, torch.Generator().manual_seed(0)),
        g.counts(x, 200, seeds=[sample_seed(0, 0), sample_seed(0, 1)]),
    ):
        assert counts[:, 1].tolist() == [200, 200]


def test_the_smallest_valid_settings_are_accepted_and_the_rest_named():
    check_counts_args(n0=1, n=1, alpha0=0.5)
    g = SmoothedClassifier(Halfspace(), create_noise("gaussian"), 2, batch_size=1)
    assert g.counts(torch.ones(1, 4), 3, torch.Generator().manual_seed(0)).sum() == 3
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        SmoothedClassifier(Halfspace(), create_noise("gaussian"), 1)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        SmoothedClassifier(Halfspace(), create_noise("gaussian"), 2, batch_size=0)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_runs_the_base_classifier_in_that_dtype(precision):
    seen = []

    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            out = self.fc(x)
            seen.append(out.dtype)
            return out

    g = SmoothedClassifier(Linear(), create_noise("gaussian"), 2, precision=precision)
    g.counts(torch.ones(1, 4), 10, torch.Generator().manual_seed(0))
    assert set(seen) == {PRECISIONS[precision]}


def test_seeded_inputs_are_x_plus_the_documented_draws_in_the_input_dtype():
    """What the base classifier sees on the seeded path: x_i + draws [0, n) of stream i, where
    block j is DRAW_BLOCK draws from a generator seeded by sample_seed(seed_i, j), in x's dtype
    (float64 here), across passes that split the blocks (n = 200, batch 48)."""
    seen = []

    class Record(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 2, dtype=x.dtype)

    noise = create_noise("laplace", sigma=1.0)
    g = SmoothedClassifier(Record(), noise, 2, batch_size=48)
    x = torch.tensor([[0.0, 1.0], [1000.0, -1.0]], dtype=torch.float64)
    seeds = [sample_seed(3, 0), sample_seed(3, 1)]
    g.counts(x, 200, seeds=seeds)
    rows = torch.cat(seen)
    assert rows.dtype == torch.float64 and rows.shape == (400, 2)
    for i in range(2):
        blocks = [
            noise.sample(
                (DRAW_BLOCK, 2),
                torch.Generator().manual_seed(sample_seed(seeds[i], j)),
                "cpu",
                torch.float64,
            )  # fmt: skip
            for j in range(2)
        ]
        expected = x[i] + torch.cat(blocks)[:200]
        got = rows[(rows[:, 0] > 500) == bool(i)]
        key = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731 (the same order for both)
        torch.testing.assert_close(key(got), key(expected), rtol=0, atol=0)


def test_unknown_precision_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        SmoothedClassifier(Halfspace(), create_noise("gaussian"), 2, precision="64-true")
    assert str(err.value) == "precision must be one of 32-true, bf16-mixed, 16-mixed, got '64-true'"


class ThreadNoise:
    """A Gaussian that records the thread of each draw."""

    def __init__(self):
        self.inner, self.threads = create_noise("gaussian", sigma=0.3), []

    def sample(self, *args, **kwargs):
        self.threads.append(threading.get_ident())
        return self.inner.sample(*args, **kwargs)


def test_prefetch_draws_in_a_worker_thread_from_two_passes_on():
    """Off by default; with it, every pass's noise (the first included) comes from the worker
    as soon as there are two passes, and the counts are the same."""
    x, main_thread = torch.rand(1, 1, 8, 8), threading.get_ident()
    counts = {}
    for prefetch in (False, True):
        noise = ThreadNoise()
        kwargs = {"prefetch": True} if prefetch else {}
        g = SmoothedClassifier(small_lenet(), noise, 10, batch_size=64, **kwargs)
        counts[prefetch] = g.certify(x, 20, 100, 0.01, seed=3).counts  # 120 draws: 2 passes
        assert len(noise.threads) == 2  # one seeded block per stage (n0 and n <= DRAW_BLOCK)
        assert all((t != main_thread) == prefetch for t in noise.threads)
    assert np.array_equal(counts[False], counts[True])
    one_pass = ThreadNoise()
    SmoothedClassifier(small_lenet(), one_pass, 10, batch_size=120, prefetch=True).certify(
        x, 20, 100, 0.01, seed=3
    )
    assert set(one_pass.threads) == {main_thread}  # nothing to overlap with one pass


class LayoutSpy(nn.Module):
    """A 3-channel convolution that records the memory layout of each input."""

    def __init__(self):
        super().__init__()
        self.conv, self.layouts = nn.Conv2d(3, 2, 3), []

    def forward(self, x):
        self.layouts.append((x.is_contiguous(), x.is_contiguous(memory_format=torch.channels_last)))
        return self.conv(x).flatten(1)[:, :2]


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_reaches_the_classifier_on_four_dimensional_inputs(channels_last):
    spy = LayoutSpy()
    kwargs = {"channels_last": True} if channels_last else {}
    g = SmoothedClassifier(spy, create_noise("gaussian", sigma=0.3), 2, batch_size=50, **kwargs)
    assert spy.conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    g.certify(torch.rand(1, 3, 5, 5), 10, 40, 0.01, seed=0)
    # channels-last and NCHW-contiguous exclude each other for 3 channels on 5 x 5.
    assert spy.layouts == [(not channels_last, channels_last)]
