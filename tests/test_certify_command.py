"""`certify.py certify` step by step (`unicr_pl/commands/certify_dataset.py`), in this process on
a tiny digits checkpoint: each check's whole message, what each step hands on, the lines it
prints. The end-to-end runs (radii, resume, shards, refusals) are in test_certify_dataset.py and
test_reliability.py."""

import hashlib
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from scipy.stats import norm

from tests.test_certify_flags import parse
from tests.test_reliability import SIGMA, certify  # n0 = 10, n = 50, alpha0 = 0.01
from unicr_pl.commands import certify_cli as cli
from unicr_pl.commands import certify_dataset as cd
from unicr_pl.iopt import IOPTConfig
from unicr_pl.noises import create_noise, list_noises
from unicr_pl.results import FileLock, read_manifest, read_results
from unicr_pl.smoothing import clopper_pearson_lower

# ------------------------------------------------------------------------------ checks


def test_checkpoint_checks_name_the_file_and_what_is_missing(digits_ckpt, tmp_path):
    missing = tmp_path / "none.ckpt"
    with pytest.raises(ValueError) as err:
        cd.load_checkpoint(str(missing))
    assert str(err.value) == f"checkpoint not found: {missing}"
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"^cannot read checkpoint {garbage}: .+"):
        cd.load_checkpoint(str(garbage))
    good = torch.load(digits_ckpt, weights_only=False)
    assert cd.load_checkpoint(digits_ckpt).keys() == good.keys()
    not_ours = "is not a unicr-pl train.py checkpoint (no model settings)"
    variants = {
        "list": [1, 2],
        "no state_dict": {k: v for k, v in good.items() if k != "state_dict"},
        "no settings": {k: v for k, v in good.items() if k != "hyper_parameters"},
    }
    for key in ("num_classes", "input_shape", "noise"):
        hp = {k: v for k, v in good["hyper_parameters"].items() if k != key}
        variants[f"no {key}"] = {**good, "hyper_parameters": hp}
    variants["no data"] = {k: v for k, v in good.items() if k != "datamodule_hyper_parameters"}
    for name, state in variants.items():
        path = tmp_path / f"{name}.ckpt"
        torch.save(state, path)
        with pytest.raises(ValueError) as err:
            cd.load_checkpoint(str(path))
        if name == "no data":
            assert (
                str(err.value) == f"{path} carries no data settings (was it written by train.py?)"
            )
        else:
            assert str(err.value) == f"{path} {not_ours}", name


def test_the_least_a_checkpoint_needs_and_any_device_it_was_saved_on(
    digits_ckpt, tmp_path, monkeypatch
):
    good = torch.load(digits_ckpt, weights_only=False)
    needed = {k: good["hyper_parameters"][k] for k in ("num_classes", "input_shape", "noise")}
    path = tmp_path / "least.ckpt"
    torch.save({**good, "hyper_parameters": needed}, path)
    assert cd.load_checkpoint(str(path))["hyper_parameters"] == needed
    seen, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: seen.append(kw) or real_load(*a, **kw))
    cd.load_checkpoint(digits_ckpt)
    assert seen[0]["map_location"] == "cpu"  # a checkpoint saved on a GPU, read on a CPU


def test_file_digest_is_the_sha256_of_the_whole_file(tmp_path):
    data = np.random.default_rng(0).bytes(5 * (1 << 19) + 3)  # several 1 MiB blocks and a tail
    for content in (data, b""):
        path = tmp_path / "f"
        path.write_bytes(content)
        assert cd._file_digest(str(path)) == hashlib.sha256(content).hexdigest()


def test_valid_arguments_pass_and_give_the_norms(tmp_path):
    assert cd.check_args(parse()) == [1.0, 2.0, math.inf]
    smallest = ("--skip", "1", "--batch", "1", "--max", "1", "--seed", "0", "--split", "val")
    assert cd.check_args(parse(*smallest, "--norms", "2", "--noise", "laplace")) == [2.0]
    assert cd.check_args(parse("--max", "-1", "--out", str(tmp_path / "r.tsv"))) == [1, 2, math.inf]
    iopt = ("--iopt", "true", "--iopt_rounds", "1", "--iopt_select", "1")
    assert cd.check_args(parse(*iopt, "--norms", "inf")) == [math.inf]
    # Without --iopt its settings are not looked at.
    assert cd.check_args(parse("--iopt_sigma_step", "0", "--multiclass", "true", "--norms", "1"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--skip", "0"], "--skip and --batch must be >= 1"),
        (["--batch", "0"], "--skip and --batch must be >= 1"),
        (["--max", "0"], "--max must be >= 1, or -1 for all samples, got 0"),
        (["--max", "-2"], "--max must be >= 1, or -1 for all samples, got -2"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--split", "train"], "--split must be test or val, got 'train'"),
        (
            ["--noise", "custom"],
            "--noise custom cannot be rebuilt from a flag: certify a custom density through the "
            "Python API (unicr_pl.lightning.CertifyTask) (--noise)",
        ),
        (
            ["--noise", "gauss"],
            f"unknown noise 'gauss'; valid: {', '.join(list_noises())} (--noise)",
        ),
        (
            ["--iopt", "true", "--multiclass", "true"],
            "--iopt works in the binary case; drop --multiclass",
        ),
        (["--iopt", "true", "--iopt_sigma_step", "0"], "--iopt_sigma_step must be > 0, got 0.0"),
        (["--iopt", "true", "--iopt_beta_step", "-1"], "--iopt_beta_step must be > 0, got -1.0"),
        (
            ["--iopt", "true", "--iopt_sigma_bounds", "0", "1"],
            "--iopt_sigma_bounds must be 0 < low < high, got 0.0 1.0",
        ),
        (
            ["--iopt", "true", "--iopt_beta_bounds", "1", "1"],
            "--iopt_beta_bounds must be 0 < low < high, got 1.0 1.0",
        ),
        (["--iopt", "true", "--iopt_rounds", "0"], "--iopt_rounds and --iopt_select must be >= 1"),
        (["--iopt", "true", "--iopt_select", "0"], "--iopt_rounds and --iopt_select must be >= 1"),
        (["--norms", "2", "0"], "norm p must be in (0, inf], got 0.0 (--norms)"),
        (["--norms", "l3x"], "norm must be a number in (0, inf] or 'inf', got 'l3x' (--norms)"),
    ],
)
def test_each_bad_argument_is_named(argv, message):
    with pytest.raises(ValueError) as err:
        cd.check_args(parse(*argv))
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n0", "0"], "n0 must be an integer"),
        (["--n", "0"], "n must be an integer"),
        (["--alpha0", "1.5"], "alpha0 must be in (0, 1)"),
    ],
)
def test_the_shared_checks_run_too(argv, message):
    """The norm and count checks belong to other modules; only that they run is checked here."""
    with pytest.raises(ValueError, match=re.escape(message)):
        cd.check_args(parse(*argv))


def test_an_existing_directory_as_out_is_refused_with_an_example(tmp_path):
    with pytest.raises(ValueError) as err:
        cd.check_args(parse("--out", str(tmp_path)))
    assert (
        str(err.value)
        == f"--out {tmp_path} is a directory; give a file name, e.g. {tmp_path}/r.tsv"
    )


@pytest.mark.parametrize("arg", ["--alpha", "--alpha=0.01"])
def test_the_renamed_alpha_flag_is_refused(arg):
    with pytest.raises(ValueError) as err:
        cd.check_renamed_flags(["--n", "5", arg, "0.01"])
    assert str(err.value) == (
        "--alpha is now --alpha0 (the failure probability); alpha means the noise scale "
        "everywhere else, and --noise_alpha overrides it here"
    )
    cd.check_renamed_flags(["--alpha0", "0.01", "--noise_alpha", "0.3"])  # the new names pass


# ------------------------------------------------------------------------------ set-up


def test_the_trainer_neither_logs_nor_checkpoints_nor_shards(tmp_path):
    trainer = cd.make_trainer(parse("--trainer.default_root_dir", str(tmp_path)))
    assert trainer.logger is None and trainer.checkpoint_callback is None
    assert trainer._accelerator_connector.use_distributed_sampler is False  # CertifyTask shards
    assert not list(tmp_path.iterdir())
    cfg = parse()
    cfg.trainer.callbacks = [EarlyStopping("loss")]  # e.g. from a training config file
    assert not any(isinstance(c, EarlyStopping) for c in cd.make_trainer(cfg).callbacks)


@pytest.mark.parametrize("devices", [0, "0", " 0", "[]", ""])
def test_no_device_is_named(devices):
    cfg = parse()
    cfg.trainer.devices = devices  # as parsed (0), or a string from a config file
    with pytest.raises(ValueError) as err:
        cd.make_trainer(cfg)
    assert str(err.value) == f"no device to certify on (--trainer.devices {devices})"


def test_an_unavailable_accelerator_is_one_line(monkeypatch):
    import lightning.pytorch as lp

    with pytest.raises(Exception) as raw:  # Lightning's own refusal: its first line is kept
        lp.Trainer(accelerator="mps", logger=False)  # never on Linux
    first = str(raw.value).strip().splitlines()[0]
    with pytest.raises(ValueError) as err:
        cd.make_trainer(parse("--trainer.accelerator", "mps"))
    assert str(err.value) == f"device unavailable: {first} (--trainer.accelerator/devices)"

    def silent(**kwargs):
        raise RuntimeError("  ")

    cfg = parse()
    monkeypatch.setattr(lp, "Trainer", silent)  # no message: the error's type names it
    with pytest.raises(ValueError) as err:
        cd.make_trainer(cfg)
    assert str(err.value) == "device unavailable: RuntimeError (--trainer.accelerator/devices)"


def test_the_model_comes_back_in_eval_mode_and_bad_settings_are_named(digits_ckpt, tmp_path):
    model = cd.load_model(digits_ckpt)
    assert not model.training and not any(m.training for m in model.modules())
    state = torch.load(digits_ckpt, weights_only=False)
    state["hyper_parameters"]["num_classes"] = "ten"  # a TypeError deep in torch
    path = tmp_path / "bad.ckpt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=rf"^cannot rebuild the model: .+ \({path}\)$"):
        cd.load_model(str(path))
    state = torch.load(digits_ckpt, weights_only=False)
    state["state_dict"] = {f"{k}.renamed": v for k, v in state["state_dict"].items()}
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        cd.load_model(str(path))
    detail = "Unexpected key(s) in state_dict: "  # torch's last line when no size differs
    assert str(err.value).startswith(f"weights do not match the model settings: {detail}")
    assert str(err.value).endswith(f" ({path})") and "\n" not in str(err.value)
    state = torch.load(digits_ckpt, weights_only=False)
    state["hyper_parameters"]["num_classes"] = 5  # the last layer's weight and bias differ
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        cd.load_model(str(path))
    first = next(k for k, v in state["state_dict"].items() if v.shape[0] == 10)  # the weight
    prefix = f"weights do not match the model settings: size mismatch for {first}: "
    assert str(err.value).startswith(prefix) and str(err.value).endswith(f" ({path})")


def gennormal_model(sigma: float = 0.5):
    from unicr_pl.lightning import UniCRModule

    return UniCRModule("mlp", 10, [1, 8, 8], [0.0], [1.0], "gennormal", sigma=sigma, beta=1.5)


def test_the_noise_is_the_training_one_unless_a_flag_changes_it(digits_ckpt, capsys):
    model = cd.load_model(digits_ckpt)
    assert cd.certify_noise(parse(), model) is model.noise
    assert capsys.readouterr().out == ""
    lap = cd.certify_noise(parse("--noise", "laplace"), model)  # the training RMS is kept
    assert lap.name == "laplace" and math.isclose(lap.sigma, SIGMA, rel_tol=1e-12)
    assert capsys.readouterr().out == (
        f"certifying under {lap!r}; the model was trained under {model.noise!r}\n"
    )
    wider = cd.certify_noise(parse("--sigma", "0.5"), model)
    assert wider.name == "gaussian" and math.isclose(wider.sigma, 0.5, rel_tol=1e-12)
    scaled = cd.certify_noise(parse("--noise_alpha", "0.3"), model)
    assert math.isclose(scaled.alpha, 0.3, rel_tol=1e-12) and scaled.name == "gaussian"
    shaped = cd.certify_noise(parse("--noise", "gennormal", "--beta", "0.75"), model)
    assert shaped.beta == 0.75 and math.isclose(shaped.sigma, SIGMA, rel_tol=1e-12)


def test_the_training_shape_is_kept_within_its_family_only():
    model = gennormal_model()
    same = cd.certify_noise(parse("--sigma", "0.3"), model)
    assert (same.name, same.beta) == ("gennormal", 1.5) and math.isclose(same.sigma, 0.3)
    assert cd.certify_noise(parse("--beta", "3"), model).beta == 3.0
    other = cd.certify_noise(parse("--noise", "pareto"), model)  # pareto's own default beta
    assert other.beta == create_noise("pareto").beta and math.isclose(other.sigma, 0.5)


def test_a_model_trained_without_noise_needs_one():
    plain = gennormal_model(sigma=0)
    assert plain.noise is None
    with pytest.raises(ValueError) as err:
        cd.certify_noise(parse(), plain)
    assert str(err.value) == "the checkpoint was trained without noise: give --noise and --sigma"
    noise = cd.certify_noise(parse("--noise", "gaussian", "--sigma", "0.2"), plain)
    assert noise.name == "gaussian" and math.isclose(noise.sigma, 0.2)


def test_the_split_and_the_data_root(digits_ckpt, tmp_path, monkeypatch):
    from unicr_pl.lightning import UniCRDataModule

    ckpt = torch.load(digits_ckpt, weights_only=False)
    ckpt["datamodule_hyper_parameters"]["not_an_argument"] = 1  # older or newer settings
    data = UniCRDataModule(**{k: v for k, v in ckpt["datamodule_hyper_parameters"].items()
                              if k != "not_an_argument"})  # fmt: skip
    data.setup("predict")
    for split, expected in (("test", data.test_set), ("val", data.val_set)):
        data_hp, dataset = cd.load_split(parse("--split", split), ckpt)
        assert "not_an_argument" not in data_hp and data_hp["dataset"] == "digits"
        assert len(dataset) == len(expected)
        assert torch.equal(dataset[len(dataset) - 1][0], expected[len(expected) - 1][0])
    data_hp, _ = cd.load_split(parse("--root", str(tmp_path)), ckpt)
    assert data_hp["root"] == str(tmp_path)

    def corrupt(self, stage):
        raise RuntimeError("truncated archive")

    monkeypatch.setattr(UniCRDataModule, "setup", corrupt)
    with pytest.raises(ValueError) as err:
        cd.load_split(parse("--root", str(tmp_path)), ckpt)
    assert str(err.value) == f"cannot load the digits data: truncated archive ({tmp_path})"


def test_iopt_starts_from_the_same_rms_in_the_searched_family():
    gauss = create_noise("gaussian", sigma=0.4)
    assert cd.iopt_setup(parse(), gauss) == (None, gauss)
    config, start = cd.iopt_setup(parse("--iopt", "true"), gauss)
    assert config == IOPTConfig(
        "gennormal", {"sigma": 0.05, "beta": 0.25}, {"sigma": (0.02, 4.0), "beta": (0.25, 5.0)},
        10, 1000, True,
    )  # fmt: skip
    assert (start.name, start.beta) == ("gennormal", 2.0) and math.isclose(start.sigma, 0.4)
    flags = ("--iopt", "true", "--iopt_family", "laplace", "--iopt_sigma_step", "0.1",
             "--iopt_sigma_bounds", "0.1", "2", "--iopt_rounds", "3", "--iopt_select", "50",
             "--iopt_sound", "false")  # fmt: skip
    config, start = cd.iopt_setup(parse(*flags), gauss)
    assert config == IOPTConfig("laplace", {"sigma": 0.1}, {"sigma": (0.1, 2.0)}, 3, 50, False)
    assert start.name == "laplace" and math.isclose(start.sigma, 0.4)
    for family in ("lapgauss", "expmix", "pareto"):  # the families with a shape
        config, start = cd.iopt_setup(parse("--iopt", "true", "--iopt_family", family), gauss)
        assert set(config.steps) == {"sigma", "beta"} and start.name == family
    same = create_noise("gennormal", sigma=0.4, beta=0.75)  # already in the family: kept
    assert cd.iopt_setup(parse("--iopt", "true"), same)[1] is same


def test_indices_steps_and_ranks(monkeypatch):
    assert cd.sample_indices(parse("--skip", "3"), 10) == [0, 3, 6, 9]
    assert cd.sample_indices(parse("--skip", "3", "--max", "2"), 10) == [0, 3]
    assert cd.sample_indices(parse("--max", "20"), 5) == [0, 1, 2, 3, 4]
    assert cd.sample_indices(parse(), 4) == [0, 1, 2, 3]
    steps = {(1000, 100): 10, (250, 100): 2, (100, 100): 1, (50, 100): 1}
    for (batch, n), expected in steps.items():
        assert cd.per_step(parse("--batch", str(batch), "--n", str(n))) == expected
    for key in ("LOCAL_RANK", "NODE_RANK", "RANK"):
        monkeypatch.delenv(key, raising=False)
    assert not cd._secondary_rank()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not cd._secondary_rank()
    for key in ("LOCAL_RANK", "NODE_RANK", "RANK"):
        monkeypatch.setenv(key, "1")
        assert cd._secondary_rank()
        monkeypatch.setenv(key, "0")


def test_row_settings_are_what_a_row_depends_on(digits_ckpt):
    cfg = parse(
        "--n", "50", "--seed", "7", "--split", "val", "--multiclass", "true", ckpt=digits_ckpt
    )
    noise = create_noise("laplace", sigma=0.5)
    config = IOPTConfig()
    settings = cd.row_settings(cfg, noise, [1.0, math.inf], config, {"dataset": "digits"})
    digest = hashlib.sha256(Path(digits_ckpt).read_bytes()).hexdigest()
    assert settings == {
        "iopt": repr(config), "ckpt": digest, "noise": repr(noise), "noise_name": "laplace",
        "noise_params": noise.params(), "n0": 100, "n": 50, "alpha0": 0.001, "split": "val",
        "norms": ["1.0", "inf"], "multiclass": True, "seed": 7,
        "seeding": "sample_seed(seed, idx, stage), blocks of 128 draws", "dataset": "digits",
    }  # fmt: skip


# ------------------------------------------------------------------------------ output


def test_the_output_lock_is_held_inside_only(tmp_path):
    out = tmp_path / "new" / "r.tsv"
    with cd.output_lock(out):
        assert out.parent.is_dir()
        with pytest.raises(ValueError, match="is being written by another process"):
            FileLock(out).acquire()
    FileLock(out).acquire().release()  # released on the way out
    with pytest.raises(RuntimeError), cd.output_lock(out):
        raise RuntimeError  # released on an error too
    FileLock(out).acquire().release()
    (tmp_path / "file").write_text("")
    blocked = tmp_path / "file" / "r.tsv"
    with pytest.raises(ValueError) as err, cd.output_lock(blocked):
        pass
    assert str(err.value) == f"cannot write results to {blocked}: File exists"


def test_predict_closes_the_writers_even_when_it_fails():
    closed = []
    writer = SimpleNamespace(close=lambda: closed.append("writer"))
    history = SimpleNamespace(close=lambda: closed.append("history"))

    def predict(task, return_predictions):
        assert return_predictions is False and not torch.is_grad_enabled()
        raise OSError("disk full")

    trainer = SimpleNamespace(predict=predict, world_size=2)
    with pytest.raises(OSError, match="disk full"):
        cd._predict(trainer, SimpleNamespace(writer=writer, history=history))
    assert closed == ["writer", "history"]
    trainer.predict = lambda task, return_predictions: None
    cd._predict(trainer, SimpleNamespace(writer=None, history=writer))  # one may be absent
    assert closed[-1] == "writer"  # and no barrier outside a process group


def reach_task(radius=None, candidate=None):
    return SimpleNamespace(radius=radius, noise="start", _candidate_radius=candidate)


@pytest.mark.parametrize("multiclass", [False, True])
def test_reach_is_the_radius_at_n_of_n(multiclass, capsys):
    seen = []

    def radius(p_a, p_b):
        seen.append((p_a, p_b))
        return {1.0: p_a * 10, 2.0: p_a * 20, math.inf: p_b}

    cfg = SimpleNamespace(alpha0=0.01, n=50, multiclass=multiclass)
    cd.print_reach(reach_task(radius), cfg, [1.0, 2.0, math.inf])
    p_top = (0.005 if multiclass else 0.01) ** (1 / 50)  # Clopper-Pearson at n of n
    ((p_a, p_b),) = seen
    assert np.allclose(p_a, [p_top], rtol=1e-15) and np.allclose(p_b, [1 - p_top], rtol=1e-15)
    expected = f"l1 {10 * p_top:.4g}, l2 {20 * p_top:.4g}, linf {1 - p_top:.4g}"
    line = f"largest radius these settings can certify (p_A = {p_top:.6g}): {expected}\n"
    assert capsys.readouterr().out == line


def test_reach_of_iopt_is_the_starting_noise_and_too_small_n_warns(capsys):
    cfg = SimpleNamespace(alpha0=0.001, n=1000, multiclass=False)
    calls = []
    task = reach_task(candidate=lambda noise, p, norm: calls.append((noise, p, norm)) or norm)
    cd.print_reach(task, cfg, [2.0])
    p_top = 0.001 ** (1 / 1000)
    assert calls == [("start", p_top, 2.0)]
    assert capsys.readouterr().out.endswith(f"(p_A = {p_top:.6g}): l2 2\n")
    cfg = SimpleNamespace(alpha0=0.01, n=6, multiclass=False)  # 0.01^(1/6) = 0.464
    cd.print_reach(reach_task(), cfg, [2.0])
    assert capsys.readouterr().out == (
        "warning: n = 6 is too small to certify anything at alpha0 = 0.01: even with every draw "
        f"correct p_A <= {0.01 ** (1 / 6):.4g} <= 1/2, so every sample abstains\n"
    )
    for multiclass in (True, False):  # p_A <= 0.125^(1/2) = 0.354, or exactly 0.25^(1/2) = 1/2
        cd.print_reach(reach_task(), SimpleNamespace(alpha0=0.25, n=2, multiclass=multiclass), [2])
        assert capsys.readouterr().out.startswith("warning: n = 2 is too small")


class FlushSpy:
    """A stdout that records whether each line was flushed (a long run's progress must show
    at once when the output goes to a file or a pipe)."""

    def __init__(self):
        self.events = []

    def write(self, text):
        self.events.append(("write", text))

    def flush(self):
        self.events.append(("flush", None))


def test_the_reach_lines_are_flushed(monkeypatch):
    for cfg, task in (
        (SimpleNamespace(alpha0=0.01, n=6, multiclass=False), reach_task()),
        (SimpleNamespace(alpha0=0.01, n=50, multiclass=False), reach_task(lambda a, b: {2: a})),
    ):
        spy = FlushSpy()
        monkeypatch.setattr("sys.stdout", spy)
        cd.print_reach(task, cfg, [2])
        assert spy.events[-1] == ("flush", None)


# ------------------------------------------------------------------------------ end to end


def test_a_run_prints_its_plan_reach_and_summary(digits_ckpt, tmp_path, capsys, monkeypatch):
    """In that order; the reach's value is test_reliability.py's, the summary's numbers
    test_the_summary_line_of_a_known_file's."""
    monkeypatch.chdir(tmp_path)
    assert certify(digits_ckpt, Path("r.tsv"), "--max", "3", "--norms", "2", "1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "certifying 3 of 3 samples (0 done) -> r.tsv"
    assert lines[1].startswith("largest radius these settings can certify (p_A = ")
    # The summary's norm is the first given.
    assert lines[-1].startswith("3 samples | certified accuracy (l2) at 0: ")
    assert lines[-1].endswith(" s/image | r.tsv") and not Path("results").exists()


def test_a_rerun_with_nothing_left_keeps_the_manifest(digits_ckpt, tmp_path):
    path = tmp_path / "r.tsv"
    assert certify(digits_ckpt, path, "--max", "2", "--norms", "2") == 0
    first = read_manifest(path)
    assert {"indices", "code_version", "ckpt_path"} <= set(first)
    assert certify(digits_ckpt, path, "--max", "2", "--norms", "2") == 0  # all done
    assert read_manifest(path) == first


def test_the_default_output_names_checkpoint_noise_and_split(digits_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["certify", "--ckpt", digits_ckpt, "--n0", "10", "--n", "50", "--max", "1"]
    assert cli.main([*argv, "--split", "val", "--norms", "2"]) == 0
    assert [p.name for p in (tmp_path / "results").glob("*.tsv")] == ["tiny_gaussian_val.tsv"]


def test_an_empty_result_summarises_as_no_rows(digits_ckpt, tmp_path, capsys):
    path = tmp_path / "r.tsv"
    assert certify(digits_ckpt, path, "--max", "1", "--norms", "2") == 0
    path.write_text(path.read_text().splitlines()[0] + "\n")  # the header only
    capsys.readouterr()
    cd.summarize(path, 2.0)
    assert capsys.readouterr().out == "no rows\n"


def test_a_secondary_rank_certifies_what_is_left_without_the_lock(
    digits_ckpt, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "r.tsv"
    assert certify(digits_ckpt, out, "--max", "2", "--norms", "2") == 0
    first = out.read_text()
    capsys.readouterr()
    monkeypatch.setenv("LOCAL_RANK", "1")
    with cd.output_lock(out):  # rank 0's launcher holds the output's lock
        assert certify(digits_ckpt, out, "--max", "4", "--norms", "2") == 0
    assert capsys.readouterr().out == ""  # no plan, no reach, no summary: rank 0 prints them
    assert out.read_text().startswith(first)
    assert [int(r["idx"]) for r in read_results(out)] == [0, 1, 2, 3]


def test_finished_rows_come_from_the_output_and_its_shards(digits_ckpt, tmp_path, capsys):
    out = tmp_path / "r.tsv"
    assert certify(digits_ckpt, out, "--max", "3", "--norms", "2") == 0
    header, *rows = out.read_text().splitlines()
    settings = Path(f"{out}.settings.json").read_text()
    out.write_text("\n".join([header, rows[0]]) + "\n")  # idx 0 here, idx 2 in a shard
    shard = Path(f"{out}.part1")
    shard.write_text("\n".join([header, rows[2]]) + "\n")
    Path(f"{shard}.settings.json").write_text(settings)
    capsys.readouterr()
    assert certify(digits_ckpt, out, "--max", "3", "--norms", "2") == 0
    assert "certifying 1 of 3 samples (2 done)" in capsys.readouterr().out
    assert [int(r["idx"]) for r in read_results(out)] == [0, 1, 2] and not shard.exists()


def test_the_flags_reach_the_task(digits_ckpt, tmp_path):
    """--multiclass bounds p_B on its own (Gaussian: Cohen's radius with that p_B), and
    --channels_last and --precision are recorded with the rows they change."""
    path = tmp_path / "m.tsv"
    flags = ("--multiclass", "true", "--channels_last", "true", "--precision", "32-true")
    assert certify(digits_ckpt, path, "--max", "4", "--norms", "2", *flags) == 0
    manifest = read_manifest(path)
    assert manifest["multiclass"] is True and manifest["channels_last"] is True
    counts = np.arange(51)
    predicted = [r for r in read_results(path) if int(r["predict"]) >= 0]
    assert predicted  # the tiny model is confident under this noise
    for r in predicted:  # a Clopper-Pearson bound of a count of 50 at alpha0 / 2, not at alpha0
        p_a, p_b = float(r["p_a"]), float(r["p_b"])
        assert np.min(np.abs(clopper_pearson_lower(counts, 50, 0.005) - p_a)) < 1e-9
        assert np.min(np.abs(clopper_pearson_lower(counts, 50, 0.01) - p_a)) > 1e-6
        expected = SIGMA / 2 * (norm.ppf(p_a) - norm.ppf(p_b))
        assert math.isclose(float(r["radius_l2"]), expected, rel_tol=1e-6)


def test_the_plan_line_is_flushed(digits_ckpt, tmp_path, monkeypatch):
    spy = FlushSpy()
    monkeypatch.setattr("sys.stdout", spy)
    assert certify(digits_ckpt, tmp_path / "r.tsv", "--max", "1", "--norms", "2") == 0
    at = next(i for i, (_, text) in enumerate(spy.events) if str(text).startswith("certifying"))
    assert spy.events[at + 1 : at + 3] == [("write", "\n"), ("flush", None)]


def test_the_summary_line_of_a_known_file(tmp_path, capsys):
    path = tmp_path / "cohen.tsv"  # Cohen et al.'s columns: the radius is the first norm's
    rows = ["0\t3\t-1\t0.0\t0\t0.1", "1\t1\t1\t0.4\t1\t0.2", "2\t2\t2\t0.8\t1\t0.3"]
    rows.append("3\t5\t-1\t0.0\t0\t0.4")  # two of four abstain; one predicts class 1
    path.write_text("\n".join(["idx\tlabel\tpredict\tradius\tcorrect\ttime", *rows]) + "\n")
    cd.summarize(path, 2.0)
    assert capsys.readouterr().out == (
        "4 samples | certified accuracy (l2) at 0: 0.500, 0.25: 0.500, 0.5: 0.250, 1: 0.000 | "
        f"abstained 50.0% | 0.250 s/image | {path}\n"
    )


def test_iopt_settings_reach_the_task_and_the_manifest(digits_ckpt, tmp_path):
    path = tmp_path / "io.tsv"
    # Sigma steps only (beta held in [1.9, 2.1]): one cached curve, shared with
    # test_certify_dataset.py's I-OPT run (the same d = 64).
    flags = ("--iopt", "true", "--iopt_select", "100", "--iopt_rounds", "1")
    assert certify(digits_ckpt, path, "--max", "1", "--norms", "2", *flags,
                   "--iopt_beta_bounds", "1.9", "2.1") == 0  # fmt: skip
    config = IOPTConfig(
        "gennormal", {"sigma": 0.05, "beta": 0.25}, {"sigma": (0.02, 4.0), "beta": (1.9, 2.1)},
        1, 100, True,
    )  # fmt: skip
    assert read_manifest(path)["iopt"] == repr(config)
    (row,) = read_results(path)
    assert float(row["iopt_sigma"]) > 0 and float(row["iopt_beta"]) == 2.0
