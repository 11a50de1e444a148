"""Certification result files: Cohen et al.'s TSV (idx label predict radius correct time) plus
p_a, p_b and one radius column per norm. Rows are appended and flushed as they are produced;
the manifest (settings, sample indices, code version) lives in a JSON file beside the TSV so
that a resumed run can refuse to mix results and a reader knows what a number came from.

Crash safety: a file is never rewritten in place. Resuming only cuts a half-written last row
(os.truncate); merging and sorting write a temporary file and os.replace it. Every writer holds
an exclusive lock (`<file>.lock`, holding the writer's pid) for as long as it writes.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from unicr_pl.radius.checks import norm_label
from unicr_pl.smoothing import ABSTAIN

BASE_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time", "p_a", "p_b"]


def norm_column(p: float) -> str:
    """Column name of the radius for l_p: radius_l1, radius_l2, radius_linf, radius_l1.5."""
    return f"radius_{norm_label(p)}"


def family_column(p: float) -> str:
    """Column name of the noise family's radius for l_p: radius_family_l2, radius_family_linf."""
    return f"radius_family_{norm_label(p)}"


def manifest_path(tsv_path: str | Path) -> Path:
    """The JSON manifest beside a result TSV: `<tsv>.settings.json`."""
    tsv_path = Path(tsv_path)
    return tsv_path.with_name(tsv_path.name + ".settings.json")


def read_manifest(tsv_path: str | Path) -> dict:
    """The settings and manifest a result TSV was written with (checkpoint hash, noise, n0, n,
    alpha0, seed, split, sample indices, ...); ValueError if it has none or it is unreadable.
    Keys renamed since a file was written are read under their new names (RENAMED)."""
    path = manifest_path(tsv_path)
    if not path.is_file():
        raise ValueError(f"{tsv_path} has no manifest ({path} not found)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read manifest {path}: {err}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"manifest {path} is not a JSON object")
    return upgrade_manifest(manifest)


def upgrade_manifest(manifest: dict) -> dict:
    """`manifest` with keys written under an old name (RENAMED) under their new one."""
    return {RENAMED.get(k, k): v for k, v in manifest.items()}


# Manifest entries that describe a run but do not change its rows: never compared on resume.
DESCRIPTIVE = frozenset({"indices", "code_version", "ckpt_path"})
# Settings added after files were written without them, with the value those files had.
IMPLIED = {"precision": "32-true", "channels_last": False}
# Settings renamed after files were written: old name -> new name (the failure probability was
# `alpha`, which now means only the noise scale).
RENAMED = {"alpha": "alpha0"}


def lock_path(path: str | Path) -> Path:
    """The lock file of a result file or run folder: `<path>.lock`."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


class FileLock:
    """Exclusive, non-blocking lock on `<target>.lock` (fcntl.flock), recording the holder's
    pid; the lock dies with its process, so a killed writer never blocks a rerun."""

    def __init__(self, target: str | Path) -> None:
        self.target, self.path, self._fd = Path(target), lock_path(target), None

    def acquire(self, wait: bool = False) -> FileLock:
        """Takes the lock; ValueError naming the file and the holder's pid if another has it
        (or, with `wait`, waits until the holder is done)."""
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ValueError(
                    f"{self.target} is being written by another process (pid {holder}); "
                    "wait for it to finish or stop it"
                ) from None
            try:  # the holder before us may have removed the file: lock the one on disk
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._fd = fd
            self.note(str(os.getpid()))
        return self

    def fileno(self) -> int:
        """The locked file descriptor (a child given it with pass_fds shares the lock)."""
        return self._fd

    def note(self, holder: str) -> None:
        """Replaces the recorded holder (e.g. the pids of a runner and its child)."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{holder}\n".encode(), 0)

    def release(self) -> None:
        """Removes the lock file and drops the lock (in that order, see `acquire`)."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def code_version() -> str:
    """unicr_pl's version and, in a git checkout, its commit (+dirty if the library differs)."""
    from unicr_pl import __version__

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True
        )
        if commit.returncode != 0:
            return __version__
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "unicr_pl"], cwd=root, capture_output=True
        )
    except OSError:
        return __version__
    return f"{__version__}+{commit.stdout.strip()}{'.dirty' if dirty.returncode else ''}"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path (same folder and suffix) to write `path` through: os.replace'd onto it
    on success, removed on failure, so a full disk or a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_manifest(tsv_path: str | Path, manifest: dict) -> None:
    """Writes the manifest atomically (temporary file + os.replace)."""
    with atomic_path(manifest_path(tsv_path)) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _split_lines(path: Path, data: bytes) -> list[str]:
    try:
        return data.decode("utf-8").split("\n")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} is not text (not a result TSV)") from None


def _parse(path: Path, lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of complete lines; every row must have the header's fields."""
    header = next(csv.reader([lines[0]], delimiter="\t"))
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            raise ValueError(f"{path}: line {number} is empty")
        fields = next(csv.reader([line], delimiter="\t"))
        if len(fields) != len(header):
            raise ValueError(
                f"{path}: line {number} has {len(fields)} fields, the header has {len(header)}"
            )
        rows.append(fields)
    return header, rows


def _check_values(path: Path, header: list[str], rows: list[list[str]]) -> None:
    numeric = [i for i, c in enumerate(header) if c == "radius" or c.startswith("radius_")]
    where = {c: i for i, c in enumerate(header)}
    for number, row in enumerate(rows, start=2):
        try:
            for i in numeric:
                float(row[i])
            if "idx" in where:
                int(row[where["idx"]])
        except ValueError:
            raise ValueError(f"{path}: line {number} has a non-numeric idx or radius") from None
        if row[where["correct"]].strip() not in ("0", "1", "True", "False", "true", "false"):
            raise ValueError(f"{path}: line {number}: 'correct' must be 0 or 1")


def read_results(path: str | Path, allow_empty: bool = False) -> list[dict]:
    """Rows of a result TSV (ours or Cohen's) as dicts of strings, read strictly: a missing,
    empty, header-only (unless `allow_empty`), truncated (last line cut) or ragged file, or a
    non-numeric radius, is a ValueError naming the file and the line."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a result file")
    if not path.is_file():
        raise ValueError(f"result file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    if not data:
        raise ValueError(f"{path} is empty (line 1): no header, no rows")
    lines = _split_lines(path, data)
    if lines[-1]:
        raise ValueError(
            f"{path}: line {len(lines)} is cut short (no end of line): the file is truncated "
            "or still being written"
        )
    header, rows = _parse(path, lines[:-1])
    if not {"radius", "correct"} <= set(header):
        raise ValueError(f"{path} is not a certification TSV (needs 'radius' and 'correct')")
    if not rows and not allow_empty:
        raise ValueError(f"{path} has a header but no rows (line 1)")
    _check_values(path, header, rows)
    return [dict(zip(header, r, strict=True)) for r in rows]


def radius_and_correct(
    rows: list[dict], p: float | None, family: bool = False
) -> tuple[list[float], list[bool]]:
    """The radius column for l_p (`radius_l<p>`, or `radius_family_l<p>` if `family`; Cohen's
    'radius' if p is None or, for the proven radius, the column is absent) and 'correct'."""
    col = "radius"
    if family:
        col = family_column(p)
        if rows and col not in rows[0]:
            raise ValueError(f"no {col} column: these results carry no family radius")
    elif p is not None and rows and norm_column(p) in rows[0]:
        col = norm_column(p)
    radius = [float(r[col]) for r in rows]
    correct = [r["correct"].strip() in ("1", "True", "true") for r in rows]
    return radius, correct


def shard_path(path: str | Path, rank: int) -> Path:
    """The result file of one rank of a sharded run: `<file>.part<rank>`."""
    path = Path(path)
    return path.with_name(f"{path.name}.part{rank}")


def shard_paths(path: str | Path) -> list[Path]:
    """The shard files of a result file (not their manifests or locks)."""
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.part\d+")
    return sorted(p for p in path.parent.glob(path.name + ".part*") if pattern.fullmatch(p.name))


def result_row(
    idx: int,
    label: int,
    prediction: int,
    seconds: float,
    p_a: float,
    p_b: float,
    radii: dict[float, float],
    family: dict[float, float],
) -> dict[str, object]:
    """One certification row: Cohen's columns (`radius` is the first norm's proven radius;
    `correct` is 0 for an abstention, ABSTAIN), p_a, p_b, and per norm the proven radius and the
    family value. Callers add their `extra` columns (e.g. I-OPT's choice)."""
    idx, label, prediction = int(idx), int(label), int(prediction)
    row: dict[str, object] = {
        "idx": int(idx),
        "label": int(label),
        "predict": int(prediction),
        "correct": int(prediction == label and prediction != ABSTAIN),
        "time": f"{seconds:.4f}",
        "p_a": f"{p_a:.10g}",
        "p_b": f"{p_b:.10g}",
    }
    for p, r in radii.items():
        row[norm_column(p)] = f"{r:.10g}"
    for p, r in family.items():
        row[family_column(p)] = f"{r:.10g}"
    row["radius"] = row[norm_column(next(iter(radii)))]
    return row


class ResultWriter:
    """Appends rows to a TSV under an exclusive lock, resuming after its last complete row.

    Args:
        path: the TSV; `path.settings.json` holds its manifest (see `read_manifest`).
        norms: l_p orders of the per-norm radius columns (the first one fills 'radius').
        settings: everything the rows depend on; resuming with other settings is refused.
        extra: further columns (e.g. the noise I-OPT chose, family radii).
        manifest: descriptive entries (keys in DESCRIPTIVE: sample indices, code version,
            checkpoint path), stored with the settings and updated on resume.
        lock: take `<path>.lock` (False when the caller already holds it).
    """

    def __init__(
        self,
        path: str | Path,
        norms: list[float],
        settings: dict,
        extra: tuple[str, ...] = (),
        manifest: dict | None = None,
        lock: bool = True,
    ) -> None:
        self.path = Path(path)
        self.columns = BASE_COLUMNS + [norm_column(p) for p in norms] + list(extra)
        self.settings_path = manifest_path(self.path)
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.manifest = json.loads(json.dumps(manifest or {}, sort_keys=True, default=str))
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a directory; give a result file name")
        self._lock = FileLock(self.path) if lock else None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._lock:
                self._lock.acquire()
            self.done = self._resume()
            self._fh = open(self.path, "a", newline="")  # noqa: SIM115 (closed in close())
        except OSError as err:
            self._release()
            raise ValueError(f"cannot write results to {self.path}: {err.strerror}") from err
        except ValueError:
            self._release()
            raise
        self._writer = csv.writer(self._fh, delimiter="\t", lineterminator="\n")

    def _release(self) -> None:
        if self._lock:
            self._lock.release()

    def _resume(self) -> set[int]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return self._start()
        try:
            exists = self.settings_path.exists()
            old = json.loads(self.settings_path.read_text()) if exists else None
        except json.JSONDecodeError:
            old = None  # a corrupt manifest: the settings are unknown, so resuming is refused
        old = upgrade_manifest(old) if isinstance(old, dict) else None
        old_settings = {k: v for k, v in (old or {}).items() if k not in DESCRIPTIVE}
        old_settings = {**{k: v for k, v in IMPLIED.items() if k in self.settings}, **old_settings}
        if old is None or old_settings != self.settings:
            changed = sorted(
                k
                for k in set(old_settings) | set(self.settings)
                if old_settings.get(k) != self.settings.get(k)
            )
            raise ValueError(
                f"{self.path} was written with other settings ({', '.join(changed) or 'unknown'}"
                "); refusing to mix results: use another output path or delete the file"
            )
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # a half-written last row: cut it off, rewrite nothing else
            os.truncate(self.path, complete)
        if complete == 0:
            return self._start()
        header, rows = _parse(self.path, _split_lines(self.path, data[: complete - 1]))
        if header != self.columns:
            raise ValueError(f"{self.path} has other columns; refusing to resume into it")
        write_manifest(self.path, {**self.settings, **self.manifest})
        return {int(r[0]) for r in rows}

    def _start(self) -> set[int]:
        """A new file: the manifest first, then the header (a kill in between leaves an empty
        or absent TSV, which the next run starts afresh)."""
        write_manifest(self.path, {**self.settings, **self.manifest})
        with open(self.path, "w", newline="") as fh:
            fh.write("\t".join(self.columns) + "\n")
        return set()

    def write(self, row: dict) -> None:
        """Writes one row (a dict over the columns) and flushes it to disk."""
        try:
            self._writer.writerow([row[c] for c in self.columns])
            self._fh.flush()
        except OSError as err:  # e.g. disk full: say which file
            raise OSError(err.errno, err.strerror, str(self.path)) from err
        self.done.add(int(row["idx"]))

    def close(self) -> None:
        """Closes the file and releases the lock."""
        try:
            self._fh.close()
        finally:
            self._release()


class HistoryWriter:
    """I-OPT's search history beside a result file, `<file>.iopt.jsonl`: one JSON object per
    input (idx, the candidates tried, their p_A and radius, the choice), appended and flushed
    as produced. Every rank of a sharded run appends to the same file, each line under an
    exclusive flock of it; opening cuts a half-written last line (a killed writer's).

    Resuming appends the inputs still to do. An input whose TSV row was never written is
    certified again and gets a second, identical line (seeded draws): `read` keeps the last
    line per idx, and only the idx present in the result file."""

    def __init__(self, path: str | Path) -> None:
        self.results = Path(path)
        self.path = self.results.with_name(self.results.name + ".iopt.jsonl")
        self._fh = open(self.path, "ab")  # noqa: SIM115 (closed in close())
        with self._locked():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                os.truncate(self.path, data.rfind(b"\n") + 1)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)

    def write(self, record: dict) -> None:
        """Appends one input's record (it must hold 'idx') as one line and flushes it."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        try:
            with self._locked():
                self._fh.write(line)
                self._fh.flush()
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(self.path)) from err

    def close(self) -> None:
        self._fh.close()

    @staticmethod
    def read(path: str | Path) -> dict[int, dict]:
        """{idx: record} for the rows of result file `path`, from `<path>.iopt.jsonl`."""
        source = Path(path).with_name(Path(path).name + ".iopt.jsonl")
        rows = done_indices(path)
        out = {}
        for line in source.read_bytes().split(b"\n")[:-1]:  # complete lines only
            record = json.loads(line)
            if record["idx"] in rows:
                out[record["idx"]] = record
        return out


def finalize(path: str | Path, lock: bool = True) -> int:
    """Merges the shards of `path` into it (one row per idx, ordered by idx) and removes them;
    also orders an unsharded file resumed out of order. Written to a temporary file and
    os.replace'd, so a kill at any moment leaves the rows either in the shards or in `path`.
    Shards that disagree on a row (other than its time) are an error. Returns the row count."""
    path = Path(path)
    held = [FileLock(path).acquire()] if lock else []
    try:
        shards = shard_paths(path)
        held += [FileLock(s).acquire(wait=True) for s in shards]  # ranks still writing finish
        header, rows = _read_complete(path)
        merged: dict[int, list[str]] = {}
        for source in [path, *shards]:
            part_header, part_rows = (header, rows) if source == path else _read_complete(source)
            if part_header != header:
                raise ValueError(f"{source} has other columns than {path}; cannot merge")
            for row in part_rows:
                _merge_row(merged, row, header, source)
        order = sorted(merged)
        if shards or [int(r[0]) for r in rows] != order:
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
                csv.writer(fh, delimiter="\t", lineterminator="\n").writerows(
                    [header, *(merged[i] for i in order)]
                )
        for shard in shards:
            shard.unlink()
            manifest_path(shard).unlink(missing_ok=True)
        return len(order)
    finally:
        for h in held:
            h.release()


def done_indices(path: str | Path) -> set[int]:
    """The idx of the complete rows of a result file, read without locking or changing it
    (for a rank > 0 whose launcher holds the locks); an absent file has none."""
    path = Path(path)
    if not path.is_file():
        return set()
    return {int(r[0]) for r in _read_complete(path)[1]}


def _read_complete(path: Path) -> tuple[list[str], list[list[str]]]:
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete == 0:
        return [], []
    return _parse(path, _split_lines(path, data[: complete - 1]))


def _merge_row(merged: dict, row: list[str], header: list[str], source: Path) -> None:
    idx = int(row[0])
    if idx in merged:
        keep = [i for i, c in enumerate(header) if c != "time"]
        if [merged[idx][i] for i in keep] != [row[i] for i in keep]:
            raise ValueError(f"{source}: sample {idx} differs from its row in another shard")
        return
    merged[idx] = row


def describe_manifest(manifest: dict, rows: list[dict] | None = None) -> list[str]:
    """Lines for a reader: what a result file's numbers came from (indices given compactly)."""
    lines = []
    for key in sorted(k for k in manifest if k != "indices"):
        lines.append(f"  {key}: {manifest[key]}")
    indices = manifest.get("indices")
    if isinstance(indices, list):
        lines.append(f"  indices: {_compact(indices)}")
        if rows is not None:
            have = {int(r["idx"]) for r in rows if "idx" in r}
            missing = len(set(indices) - have)
            lines.append(
                f"  rows: {len(rows)} ({missing} of the {len(indices)} indices not certified)"
            )
    return lines


def _compact(indices: list[int]) -> str:
    steps = {b - a for a, b in zip(indices[:-1], indices[1:], strict=True)}
    if len(indices) > 2 and len(steps) == 1:
        step = indices[1] - indices[0]
        return f"{len(indices)} samples, {indices[0]} to {indices[-1]} step {step}"
    shown = ", ".join(map(str, indices[:10]))
    return f"{len(indices)} samples: {shown}{', ...' if len(indices) > 10 else ''}"


# ---- The certification callback's files (read back by C-OPT's runner) ----
# The callback certifies validation samples while training; spawned DDP workers lose their
# state, so it leaves two files in the run folder: the synced table (rank 0) and each rank's
# per-sample radii. Plain files rather than the logger, so that C-OPT needs no W&B server.
CALLBACK_TABLE = "certification_last.json"
CALLBACK_SAMPLES = "certification_last.rank{rank}.tsv"


def write_callback_table(folder: str | Path, table: dict[str, list[float]]) -> None:
    """Writes the callback's certified-accuracy table {norm label: [acc per radius, R_score]}."""
    with atomic_path(Path(folder) / CALLBACK_TABLE) as tmp:
        tmp.write_text(json.dumps(table))


def read_callback_table(folder: str | Path) -> dict[str, list[float]] | None:
    """The table `write_callback_table` wrote in `folder`, or None if there is none."""
    path = Path(folder) / CALLBACK_TABLE
    return json.loads(path.read_text()) if path.is_file() else None


def remove_callback_table(folder: str | Path) -> None:
    """Removes an earlier run's table (it must never be shown as this run's)."""
    (Path(folder) / CALLBACK_TABLE).unlink(missing_ok=True)


def write_callback_samples(folder: str | Path, rank: int, columns: dict[str, list]) -> None:
    """Writes one rank's per-sample columns (idx, label, predict, correct, p_a, radius_*) as a
    TSV, atomically."""
    with atomic_path(Path(folder) / CALLBACK_SAMPLES.format(rank=rank)) as tmp:
        with open(tmp, "w") as fh:
            fh.write("\t".join(columns) + "\n")
            for row in zip(*columns.values(), strict=True):
                fh.write("\t".join(str(v) for v in row) + "\n")


def read_callback_radii(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """{radius column without its 'radius_' prefix (l2, family_l2, ...): (radius, correct)}
    over every rank's samples in `folder`, or None if the callback wrote none there."""
    parts = sorted(Path(folder).glob(CALLBACK_SAMPLES.format(rank="*")))
    if not parts:
        return None
    rows: list[dict] = []
    for part in parts:
        with open(part, newline="") as fh:
            rows += list(csv.DictReader(fh, delimiter="\t"))
    correct = np.array([int(r["correct"]) for r in rows], dtype=bool)
    return {
        k.removeprefix("radius_"): (np.array([float(r[k]) for r in rows]), correct)
        for k in (rows[0] if rows else {})
        if k.startswith("radius_")
    }


__all__ = [
    "BASE_COLUMNS",
    "CALLBACK_SAMPLES",
    "CALLBACK_TABLE",
    "FileLock",
    "HistoryWriter",
    "atomic_path",
    "ResultWriter",
    "code_version",
    "describe_manifest",
    "done_indices",
    "family_column",
    "finalize",
    "manifest_path",
    "norm_column",
    "radius_and_correct",
    "result_row",
    "read_callback_radii",
    "read_callback_table",
    "read_manifest",
    "read_results",
    "upgrade_manifest",
    "shard_path",
    "shard_paths",
    "remove_callback_table",
    "write_callback_samples",
    "write_callback_table",
    "write_manifest",
]
