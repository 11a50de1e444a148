"""Result TSVs: Cohen's columns, flushing, resume, refusing to mix settings."""

import errno
import fcntl
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import unicr_pl
import unicr_pl.results as results_module
from unicr_pl.results import (
    FileLock,
    HistoryWriter,
    ResultWriter,
    _compact,
    atomic_path,
    code_version,
    describe_manifest,
    done_indices,
    finalize,
    lock_path,
    manifest_path,
    radius_and_correct,
    read_callback_radii,
    read_callback_table,
    read_manifest,
    read_results,
    remove_callback_table,
    result_row,
    shard_path,
    shard_paths,
    write_callback_samples,
    write_callback_table,
)
from unicr_pl.smoothing import ABSTAIN


def row(i, r=0.5):
    return {
        "idx": i,
        "label": 1,
        "predict": 1,
        "radius": r,
        "correct": 1,
        "time": 0.1,
        "p_a": 0.9,
        "p_b": 0.1,
        "radius_l1": r,
        "radius_l2": r,
        "radius_linf": r / 10,
    }


def test_write_resume_and_refuse(tmp_path):
    path = tmp_path / "out.tsv"
    w = ResultWriter(path, [1.0, 2.0, float("inf")], {"n": 100, "noise": "gaussian"})
    w.write(row(0))
    w.write(row(1))
    # Simulate a crash in the middle of a row.
    with open(path, "a") as fh:
        fh.write("2\t1\t1")
    w.close()
    again = ResultWriter(path, [1.0, 2.0, float("inf")], {"n": 100, "noise": "gaussian"})
    assert again.done == {0, 1}
    again.write(row(2, 0.7))
    again.close()
    rows = read_results(path)
    assert [r["idx"] for r in rows] == ["0", "1", "2"]
    assert list(rows[0])[:6] == ["idx", "label", "predict", "radius", "correct", "time"]
    radius, correct = radius_and_correct(rows, float("inf"))
    assert radius == [0.5 / 10, 0.5 / 10, 0.7 / 10] and all(correct)
    with pytest.raises(ValueError, match="other settings \\(n\\)"):
        ResultWriter(path, [1.0, 2.0, float("inf")], {"n": 200, "noise": "gaussian"})


def test_unwritable_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write results"):
        ResultWriter(blocker / "x.tsv", [2.0], {})


def test_cohen_file_is_read(tmp_path):
    path = tmp_path / "cohen.tsv"
    path.write_text(
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.8\t1\t0:00:01\n"
        "10\t2\t-1\t0.0\t0\t0:00:01\n"
    )
    radius, correct = radius_and_correct(read_results(path), 2.0)
    assert radius == [0.8, 0.0] and correct == [True, False]
    with pytest.raises(ValueError, match="not found"):
        read_results(tmp_path / "missing.tsv")


# ---- every public function in this process (the mutation run sees only in-process tests) ----

NORMS = [1.0, 2.0, float("inf")]


def test_result_row_columns_and_abstention():
    r = result_row(7, 3, 3, 1.23456, 0.9, 0.05, {2.0: 0.5, 1.0: 0.75}, {2.0: 0.6})
    assert r["idx"] == 7 and r["label"] == 3 and r["predict"] == 3 and r["correct"] == 1
    assert r["time"] == "1.2346" and r["p_a"] == "0.9" and r["p_b"] == "0.05"
    assert r["radius"] == r["radius_l2"] == "0.5" and r["radius_l1"] == "0.75"  # first norm
    assert r["radius_family_l2"] == "0.6" and "radius_family_l1" not in r
    wrong = result_row(1, 3, 2, 0.0, 0.7, 0.3, {1.0: 0.1}, {})
    assert wrong["correct"] == 0 and wrong["radius"] == "0.1"
    abstain = result_row(1, ABSTAIN, ABSTAIN, 0.0, 0.4, 0.6, {1.0: 0.0}, {})
    assert abstain["correct"] == 0  # an abstention is never correct, even against label -1


def test_read_results_names_the_bad_line(tmp_path):
    head = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
    good = "0\t1\t1\t0.5\t1\t0\n"
    cases = {
        head + good + "1\t1\t1\tx\t1\t0\n": "line 3 has a non-numeric idx or radius",
        head + "a\t1\t1\t0.5\t1\t0\n": "line 2 has a non-numeric idx or radius",
        head + good + "1\t1\t1\t0.5\t2\t0\n": "line 3: 'correct' must be 0 or 1",
        head + good + "1\t1\t1\n": "line 3 has 3 fields, the header has 6",
        head + good + "\n": "line 3 is empty",
        head + good + "1\t1": "line 3 is cut short",
        head: "has a header but no rows",
        "": "is empty (line 1)",
        "a\tb\n1\t2\n": "not a certification TSV",
    }
    cases[head.replace("time", "radius_l2") + "0\t1\t1\t0.5\t1\tx\n"] = (
        "line 2 has a non-numeric idx or radius"  # every radius_* column is checked
    )
    path = tmp_path / "r.tsv"
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            read_results(path)
        assert str(path) in str(err.value)  # the message names the file
    path.write_bytes(head.encode() + b"\xff\xfe\n")
    with pytest.raises(ValueError, match="line 2 is not text"):
        read_results(path)
    path.write_text(head)
    assert read_results(path, allow_empty=True) == []
    path.write_text(head + "0\t1\t1\t0.5\tTrue\t0\n1\t1\t0\t0\tfalse\t0\n")
    assert radius_and_correct(read_results(path), None) == ([0.5, 0.0], [True, False])
    path.write_text(head + "0\t1\t1\t0.5\ttrue\t0\n1\t1\t0\t0\tFalse\t0\n")
    assert radius_and_correct(read_results(path), None) == ([0.5, 0.0], [True, False])
    path.write_text("radius\tcorrect\n0.25\t1\n")  # the two columns a reader needs suffice
    assert read_results(path) == [{"radius": "0.25", "correct": "1"}]
    with pytest.raises(ValueError, match="is a directory"):
        read_results(tmp_path)


def test_radius_and_correct_picks_the_norm_or_family_column(tmp_path):
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, [2.0], {}, extra=("radius_family_l2",))
    w.write({**row(0, 0.4), "radius_family_l2": 0.9, "correct": 0})
    w.close()
    rows = read_results(path)
    assert radius_and_correct(rows, 2.0) == ([0.4], [False])
    assert radius_and_correct(rows, 2.0, family=True) == ([0.9], [False])
    assert radius_and_correct(rows, 1.0) == ([0.4], [False])  # no l1 column: Cohen's radius
    with pytest.raises(ValueError, match="no radius_family_l1 column"):
        radius_and_correct(rows, 1.0, family=True)


def test_manifest_is_written_upgraded_and_checked(tmp_path):
    path = tmp_path / "r.tsv"
    with pytest.raises(ValueError, match="has no manifest"):
        read_manifest(path)
    w = ResultWriter(path, [2.0], {"alpha": 0.001, "n": 10}, manifest={"indices": [0, 1]})
    w.close()
    assert read_manifest(path) == {"alpha0": 0.001, "n": 10, "indices": [0, 1]}  # renamed
    manifest_path(path).write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a JSON object"):
        read_manifest(path)
    manifest_path(path).write_text("{")
    with pytest.raises(ValueError, match="cannot read manifest"):
        read_manifest(path)


def test_resume_accepts_old_names_and_implied_settings_but_not_other_columns(tmp_path):
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, [2.0], {"n": 10})
    w.write(row(4))
    w.close()
    old = json.loads(manifest_path(path).read_text())  # a file from before alpha0 and precision
    manifest_path(path).write_text(json.dumps({**old, "alpha": 0.01}))
    again = ResultWriter(path, [2.0], {"n": 10, "alpha0": 0.01, "precision": "32-true"})
    assert again.done == {4}
    again.close()
    with pytest.raises(ValueError, match="other settings \\(precision\\)"):
        ResultWriter(path, [2.0], {"n": 10, "alpha0": 0.01, "precision": "bf16-mixed"})
    with pytest.raises(ValueError, match="has other columns"):
        ResultWriter(path, [1.0], {"n": 10, "alpha0": 0.01, "precision": "32-true"})
    assert not lock_path(path).exists()  # every refusal released its lock


def test_file_lock_names_the_holder_and_dies_with_release(tmp_path):
    target = tmp_path / "r.tsv"
    first = FileLock(target).acquire()
    assert lock_path(target).read_text() == f"{os.getpid()}\n"
    first.note("123 456")
    with pytest.raises(ValueError) as err:
        FileLock(target).acquire()
    assert str(err.value) == (
        f"{target} is being written by another process (pid 123 456); "
        "wait for it to finish or stop it"
    )
    first.release()
    assert not lock_path(target).exists()
    with FileLock(target) as again:
        assert again.fileno() >= 0 and lock_path(target).exists()
    assert not lock_path(target).exists()


def test_finalize_merges_shards_in_order_and_refuses_disagreement(tmp_path):
    path = tmp_path / "r.tsv"
    for rank, indices in ((0, [4, 0]), (1, [3, 1, 0])):
        w = ResultWriter(shard_path(path, rank), NORMS, {"n": 1})
        for i in indices:
            w.write({**row(i), "time": 0.5 * rank})  # the time may differ between shards
        w.close()
    (tmp_path / "r.tsv.part1.lock").write_text("")  # a stale lock is not a shard
    assert shard_paths(path) == [shard_path(path, 0), shard_path(path, 1)]
    ResultWriter(path, NORMS, {"n": 1}).close()
    assert finalize(path) == 4
    assert [r["idx"] for r in read_results(path)] == ["0", "1", "3", "4"]
    assert shard_paths(path) == [] and not manifest_path(shard_path(path, 0)).exists()
    assert done_indices(path) == {0, 1, 3, 4} and done_indices(tmp_path / "none.tsv") == set()
    for rank, radius in ((0, 0.5), (1, 0.6)):
        w = ResultWriter(shard_path(path, rank), NORMS, {"n": 1})
        w.write(row(9, radius))
        w.close()
    with pytest.raises(ValueError, match="sample 9 differs from its row in another shard"):
        finalize(path)


def test_finalize_orders_a_file_resumed_out_of_order(tmp_path):
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, NORMS, {})
    for i in (2, 0, 1):
        w.write(row(i))
    w.close()
    assert finalize(path) == 3
    assert [r["idx"] for r in read_results(path)] == ["0", "1", "2"]


def test_history_keeps_the_last_line_of_each_written_row(tmp_path):
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, [2.0], {})
    w.write(row(0))
    w.write(row(2))
    w.close()
    h = HistoryWriter(path)
    for record in ({"idx": 0, "v": 1}, {"idx": 1, "v": 1}, {"idx": 0, "v": 2}):
        h.write(record)
    h.close()
    with open(h.path, "ab") as fh:
        fh.write(b'{"idx": 2, "v"')  # a killed writer's half line
    HistoryWriter(path).close()  # opening cuts it
    assert h.path.read_bytes().endswith(b"}\n")
    assert HistoryWriter.read(path) == {0: {"idx": 0, "v": 2}}  # idx 1 has no result row


def test_describe_manifest_is_compact(tmp_path):
    assert _compact([3, 5, 7, 9]) == "4 samples, 3 to 9 step 2"
    assert _compact([0, 5, 10]) == "3 samples, 0 to 10 step 5"
    assert _compact([1, 2]) == "2 samples: 1, 2"
    assert _compact(list(range(10))[::-1][:9] + [42]) == (
        "10 samples: 9, 8, 7, 6, 5, 4, 3, 2, 1, 42"  # ten shown in full, no ellipsis
    )
    assert _compact(list(range(0, 24, 2)) + [99]) == (
        "13 samples: 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, ..."
    )
    lines = describe_manifest({"n": 10, "indices": [0, 1, 2, 3]}, [{"idx": "1"}, {"idx": "3"}])
    assert lines == [
        "  n: 10",
        "  indices: 4 samples, 0 to 3 step 1",
        "  rows: 2 (2 of the 4 indices not certified)",
    ]


def test_callback_files_round_trip(tmp_path):
    assert read_callback_table(tmp_path) is None and read_callback_radii(tmp_path) is None
    write_callback_table(tmp_path, {"l2": [1.0, 0.5, 0.3]})
    assert read_callback_table(tmp_path) == {"l2": [1.0, 0.5, 0.3]}
    remove_callback_table(tmp_path)
    assert read_callback_table(tmp_path) is None
    for rank, (idx, radius, correct) in enumerate(((0, 0.5, 1), (1, 0.25, 0))):
        columns = {"idx": [idx], "correct": [correct], "radius_l2": [radius],
                   "radius_family_l2": [2 * radius]}  # fmt: skip
        write_callback_samples(tmp_path, rank, columns)
    radii = read_callback_radii(tmp_path)
    assert set(radii) == {"l2", "family_l2"}
    np.testing.assert_array_equal(radii["l2"][0], [0.5, 0.25])
    np.testing.assert_array_equal(radii["family_l2"][0], [1.0, 0.5])
    np.testing.assert_array_equal(radii["l2"][1], [True, False])


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_code_version_starts_with_the_package_version():
    version = code_version()
    assert version == unicr_pl.__version__ or version.startswith(unicr_pl.__version__ + "+")


def test_a_second_writer_is_refused_unless_told_the_lock_is_held(tmp_path):
    path = tmp_path / "deep" / "er" / "r.tsv"  # missing folders are made
    first = ResultWriter(path, [2.0], {})
    with pytest.raises(ValueError, match="being written by another process"):
        ResultWriter(path, [2.0], {})
    first.write(row(3))
    assert first.done == {3}
    first.close()
    with FileLock(path):  # a caller that holds the lock itself (a sharded run's launcher)
        ResultWriter(path, [2.0], {}, lock=False).close()
    with pytest.raises(ValueError, match="is a directory; give a result file name"):
        ResultWriter(tmp_path, [2.0], {})


def test_resume_refuses_an_added_or_dropped_setting(tmp_path):
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, [2.0], {"n": 10})
    w.write(row(0))
    w.close()
    with pytest.raises(ValueError, match="other settings \\(seed\\)"):
        ResultWriter(path, [2.0], {"n": 10, "seed": 1})
    with pytest.raises(ValueError, match="other settings \\(n\\)"):
        ResultWriter(path, [2.0], {})


def test_a_failed_write_names_the_file(tmp_path):
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, [2.0], {})

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    w._fh.flush = full
    with pytest.raises(OSError) as err:
        w.write(row(0))
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert err.value.strerror == "No space left on device"
    w._fh = open(os.devnull, "w")  # noqa: SIM115 (closed by close())
    w.close()


def test_file_lock_waits_for_its_holder_when_asked(tmp_path):
    target = tmp_path / "r.tsv"
    holder = FileLock(target).acquire()
    threading.Timer(0.3, holder.release).start()
    waited = FileLock(target).acquire(wait=True)  # returns once the holder is done
    assert lock_path(target).read_text() == f"{os.getpid()}\n"
    waited.release()


def test_finalize_waits_for_a_rank_still_writing_and_refuses_a_held_file(tmp_path):
    path = tmp_path / "r.tsv"
    ResultWriter(path, NORMS, {}).close()  # the launcher's file, then a rank's shard
    w = ResultWriter(shard_path(path, 0), NORMS, {})
    w.write(row(0))
    threading.Timer(0.3, w.close).start()  # the rank finishes a moment later
    assert finalize(path) == 1
    with FileLock(path), pytest.raises(ValueError, match="being written by another process"):
        finalize(path)


def test_finalize_leaves_an_ordered_file_alone_and_refuses_other_columns(tmp_path):
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, NORMS, {})
    for i in (5, 6):  # idx and label differ: the order is read from idx
        w.write({**row(i), "label": 9 - i})
    w.close()
    inode = path.stat().st_ino
    assert finalize(path) == 2 and path.stat().st_ino == inode  # not rewritten
    ResultWriter(shard_path(path, 0), [2.0], {}).close()
    with pytest.raises(ValueError, match="has other columns than"):
        finalize(path)


def test_code_version_is_the_version_the_commit_and_dirty(monkeypatch):
    calls, codes = [], {}

    def git(args, cwd=None, capture_output=False, text=False):
        calls.append((args, cwd, capture_output))
        if args[1] == "rev-parse":
            assert text
            return subprocess.CompletedProcess(args, codes["rev"], stdout="0123456789ab\n")
        return subprocess.CompletedProcess(args, codes["dirty"])

    monkeypatch.setattr(results_module.subprocess, "run", git)
    version = unicr_pl.__version__
    root = Path(results_module.__file__).resolve().parents[1]
    for rev_code, dirty_code, expected in (
        (0, 0, f"{version}+0123456789ab"),
        (0, 1, f"{version}+0123456789ab.dirty"),
        (128, 0, version),  # not a git checkout
    ):
        calls.clear()
        codes.update(rev=rev_code, dirty=dirty_code)
        assert code_version() == expected
        assert calls[0] == (["git", "rev-parse", "--short=12", "HEAD"], root, True)
        if rev_code == 0:
            assert calls[1] == (["git", "diff", "--quiet", "HEAD", "--", "unicr_pl"], root, True)

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(results_module.subprocess, "run", no_git)
    assert code_version() == version


def test_file_names_and_the_manifest_format(tmp_path):
    assert manifest_path("a/r.tsv") == Path("a/r.tsv.settings.json")
    assert lock_path("a/r.tsv") == Path("a/r.tsv.lock")
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, [2.0], {"root": Path("/data"), "n": 3}, manifest={"indices": [1]})
    w.write(row(1))
    w.close()
    expected = {"indices": [1], "n": 3, "root": "/data"}  # paths and the like as text
    assert manifest_path(path).read_text() == json.dumps(expected, indent=1, sort_keys=True) + "\n"
    ResultWriter(path, [2.0], {"root": Path("/data"), "n": 3}).close()  # the same settings
    assert b"\r" not in path.read_bytes()  # Unix line ends, as Cohen's files
    w = ResultWriter(shard_path(path, 0), [2.0], {})
    w.write(row(0))
    w.close()
    finalize(path)
    assert b"\r" not in path.read_bytes()


def test_a_lock_is_reusable_and_its_release_tolerates_a_removed_file(tmp_path):
    target = tmp_path / "r.tsv"
    lock = FileLock(target).acquire()
    lock.release()
    lock.acquire()  # the same object locks again
    with pytest.raises(ValueError, match="being written by another process"):
        FileLock(target).acquire()
    lock_path(target).unlink()  # removed behind its back
    lock.release()
    fd = os.open(lock_path(target), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a holder that never wrote its pid
    try:
        with pytest.raises(ValueError, match=r"\(pid unknown\)"):
            FileLock(target).acquire()
    finally:
        os.close(fd)


def test_resume_refuses_a_file_without_a_usable_manifest(tmp_path):
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, [2.0], {"n": 1})
    w.write(row(0))
    w.close()
    for corrupt in ("[1]", "{"):  # not an object, not JSON: a one-line refusal
        manifest_path(path).write_text(corrupt)
        with pytest.raises(ValueError, match="other settings"):
            ResultWriter(path, [2.0], {"n": 1})
    manifest_path(path).unlink()
    with pytest.raises(ValueError, match="other settings"):
        ResultWriter(path, [2.0], {"n": 1})


def test_finalize_under_the_callers_lock_and_without_shard_manifests(tmp_path):
    path = tmp_path / "r.tsv"
    ResultWriter(path, [2.0], {}).close()
    w = ResultWriter(shard_path(path, 1), [2.0], {})
    w.write(row(7))
    w.close()
    manifest_path(shard_path(path, 1)).unlink()  # a rank killed before its manifest
    with FileLock(path):
        assert finalize(path, lock=False) == 1
    assert shard_paths(path) == []


def test_history_lines_have_sorted_keys_and_errors_name_the_file(tmp_path):
    path = tmp_path / "r.tsv"
    h = HistoryWriter(path)
    h.write({"v": 1, "idx": 0})
    assert h.path.read_text() == '{"idx": 0, "v": 1}\n'

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    h._fh.flush = full
    with pytest.raises(OSError) as err:
        h.write({"idx": 1})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(h.path)
    assert err.value.strerror == "No space left on device"


def test_callback_files_edge_cases(tmp_path):
    remove_callback_table(tmp_path)  # nothing to remove: not an error
    write_callback_samples(tmp_path, 0, {"idx": [], "correct": [], "radius_l2": []})
    assert read_callback_radii(tmp_path) == {}  # a rank with no samples
    with pytest.raises(ValueError):  # columns of unequal length are never written short
        write_callback_samples(tmp_path, 1, {"idx": [0, 1], "correct": [1], "radius_l2": [0.1]})


def test_the_refusal_to_mix_settings_says_what_to_do(tmp_path):
    path = tmp_path / "r.tsv"
    w = ResultWriter(path, [2.0], {"n": 1, "seed": 0})
    w.write(row(0))
    w.close()
    with pytest.raises(ValueError) as err:
        ResultWriter(path, [2.0], {"n": 2, "seed": 1})
    assert str(err.value) == (
        f"{path} was written with other settings (n, seed); refusing to mix results: use "
        "another output path or delete the file"
    )


def test_resume_starts_afresh_after_a_kill_before_the_header(tmp_path):
    """A kill between the manifest and a whole header leaves an empty or half-header TSV: the
    next run starts afresh (an empty one whatever the old manifest says: nothing to mix)."""
    path = tmp_path / "r.tsv"
    for partial, settings in ((b"", {"n": 2}), (b"idx\tla", {"n": 1})):
        path.unlink(missing_ok=True)
        ResultWriter(path, [2.0], {"n": 1}).close()
        path.write_bytes(partial)
        w = ResultWriter(path, [2.0], settings)
        assert w.done == set()
        w.close()
        assert path.read_text().startswith("idx\tlabel\t")
    manifest_path(path).unlink()
    path.write_text(path.read_text() + "0\t1\t1\t0.5\t1\t0\t0.9\t0.1\t0.5\n")
    with pytest.raises(ValueError, match=r"other settings \(unknown\)"):
        ResultWriter(path, [2.0], {})  # no manifest and no setting to name


def test_read_results_messages_name_the_file_and_the_cause(tmp_path, monkeypatch):
    path = tmp_path / "r.tsv"
    path.write_bytes(b"idx\tradius\tcorrect\n\xff\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: line 2 is not text")):
        read_results(path)
    path.write_text("idx\tradius\tcorrect\n0\t0.5")
    with pytest.raises(ValueError) as err:
        read_results(path)
    assert str(err.value) == (
        f"{path}: line 2 is cut short (no end of line): the file is truncated or still being "
        "written"
    )

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ValueError, match=re.escape(f"cannot read {path}: Permission denied")):
        read_results(path)


def test_manifest_entries_of_any_type_and_compact_long_lists(tmp_path):
    path = tmp_path / "r.tsv"
    ResultWriter(path, [2.0], {}, manifest={"ckpt_path": tmp_path / "m.ckpt"}).close()
    assert read_manifest(path)["ckpt_path"] == str(tmp_path / "m.ckpt")
    eleven = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15]
    assert _compact(eleven) == "11 samples: 0, 1, 3, 4, 6, 7, 9, 10, 12, 13, ..."


def test_callback_radii_of_one_sample_are_a_boolean_mask(tmp_path):
    write_callback_samples(tmp_path, 0, {"idx": [4], "correct": [0], "radius_l2": [0.3]})
    radius, correct = read_callback_radii(tmp_path)["l2"]
    assert radius.tolist() == [0.3] and correct.dtype == bool and correct.tolist() == [False]
