"""`CertifyTask`: dataset certification through Lightning's predict loop.

Each predict step certifies a batch of inputs (n0 selection and n estimation draws each),
turns p_A into radii, and appends one TSV row per input to this rank's result file, flushed at
once. The noise of each input is seeded by (seed, its dataset index), so a row does not depend
on batching, sharding or resuming (`SmoothedClassifier` packs the draws of a step's inputs
into full forward passes). `precision` autocasts the base classifier only, and is part of the
settings a resume must match. With several devices each rank takes every world_size-th input
of the list (no padding, so no duplicates) into its own locked shard file; the launcher merges
the shards.
"""

from __future__ import annotations

import os
import time

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from unicr_pl.iopt import IOPTConfig, iopt
from unicr_pl.noises import create_noise
from unicr_pl.processes import die_with_parent
from unicr_pl.radius.lookup import SampleRadius
from unicr_pl.results import HistoryWriter, ResultWriter, family_column, result_row, shard_path
from unicr_pl.smoothing import ABSTAIN, SmoothedClassifier, sample_seed


class IndexedSubset(Dataset):
    """(idx, x, y) for the chosen indices of a dataset, so rows keep the dataset's index."""

    def __init__(self, data: Dataset, indices: list[int]) -> None:
        self.data, self.indices = data, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        idx = self.indices[i]
        x, y = self.data[idx]
        return idx, x, y


class CertifyTask(L.LightningModule):
    """Wraps a trained UniCRModule; `predict_step` certifies and writes rows."""

    def __init__(
        self,
        model,
        noise,
        n0: int,
        n: int,
        alpha0: float,
        batch: int,
        norms: list[float],
        multiclass: bool,
        seed: int,
        out_path: str,
        settings: dict,
        iopt_config: IOPTConfig | None = None,
        manifest: dict | None = None,
        precision: str = "32-true",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.manifest = manifest or {}
        self._launcher = os.getpid()  # ranks spawned from here see it as their parent
        self.inputs: tuple[Dataset, list[int], int] | None = None
        self.iopt_config = iopt_config
        self.extra = iopt_config.columns() if iopt_config else ()
        self.model, self.noise = model, noise
        self.n0, self.n, self.alpha0, self.multiclass, self.seed = n0, n, alpha0, multiclass, seed
        # Mixed precision and channels-last change the logits: rows depend on them.
        settings = {**settings, "precision": precision, "channels_last": channels_last}
        self.norms, self.out_path, self.settings = norms, out_path, settings
        self.smoothed = SmoothedClassifier(
            model.backbone,
            noise,
            model.hparams.num_classes,
            model.normalize,
            batch,
            precision=precision,
            channels_last=channels_last,
        )
        dim = int(np.prod(model.hparams.input_shape))
        # I-OPT needs radii per candidate noise (`_candidate_radius`), not this look-up.
        self.radius = None if iopt_config else SampleRadius(noise, dim, norms, multiclass)
        # The family radius (an upper bound, see SampleRadius.family) beside the proven one.
        self.extra = (*self.extra, *(family_column(p) for p in norms))
        self._candidates: dict[tuple, SampleRadius] = {}
        self.writer: ResultWriter | None = None
        self.history: HistoryWriter | None = None  # I-OPT's search, <out>.iopt.jsonl

    def set_inputs(self, dataset: Dataset, todo: list[int], per_step: int) -> None:
        """The samples to certify (dataset indices) and how many go in one predict step."""
        self.inputs = (dataset, list(todo), per_step)

    def predict_dataloader(self) -> DataLoader:
        """This rank's share of the inputs: every world_size-th index, in order."""
        dataset, todo, per_step = self.inputs
        mine = todo[self.global_rank :: self.trainer.world_size]
        return DataLoader(IndexedSubset(dataset, mine), batch_size=per_step, shuffle=False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Only the images go to the device: indices and labels are read on the host, and
        reading them from an accelerator would cost one synchronisation per value."""
        idx, x, y = batch
        return idx, x.to(device), y

    def on_predict_start(self) -> None:
        if str(self.trainer.precision) not in ("32-true", "32"):
            # Lightning's autocast would wrap the sampling too, and the manifest would not
            # record it: the precision is the task's own (autocast around the classifier).
            raise ValueError(
                f"certify with --precision {self.trainer.precision}, not --trainer.precision"
            )
        single = self.trainer.world_size == 1
        # A rank spawned from here, or a rank > 0 started by a launcher script (ddp), must not
        # go on certifying as an orphan when its launcher is killed.
        if not single and (os.getppid() == self._launcher or self.global_rank > 0):
            die_with_parent(os.getppid())
        path = self.out_path if single else shard_path(self.out_path, self.global_rank)
        # One process: the launcher holds the output's lock; ranks lock their own shard.
        self.writer = ResultWriter(
            path, self.norms, self.settings, self.extra, self.manifest, lock=not single
        )
        if self.iopt_config is not None:  # one file for every rank, a flock per line
            self.history = HistoryWriter(self.out_path)

    def predict_step(self, batch, batch_idx):
        if self.iopt_config is not None:
            return self._predict_iopt(batch)
        idx, x, y = batch
        start = time.perf_counter()
        indices = [int(i) for i in idx]
        cert = self.smoothed.certify(
            x,
            self.n0,
            self.n,
            self.alpha0,
            multiclass=self.multiclass,
            seed=self.seed,
            indices=indices,
        )
        radii, family = self.radius.both(cert.p_a, cert.p_b)
        seconds = (time.perf_counter() - start) / len(idx)
        for i in range(len(idx)):
            row = result_row(
                idx[i], y[i], cert.prediction[i], seconds, cert.p_a[i], cert.p_b[i],
                {p: radii[p][i] for p in self.norms}, {p: family[p][i] for p in self.norms},
            )  # fmt: skip
            self.writer.write(row)
        return None

    def _candidate_radii(self, noise, p_a: float) -> tuple[dict, dict]:
        """Binary (proven, family) radius per norm of one I-OPT candidate noise. Hill climbing
        moves on a grid of (sigma, beta), so the same candidates recur across inputs: each gets
        one look-up (Cohen's closed form, or a curve cached on disk that never over-states),
        not one exact optimisation per candidate and input."""
        if p_a <= 0.5:
            zero = dict.fromkeys(self.norms, 0.0)
            return zero, zero
        key = noise.identity()
        if key not in self._candidates:
            dim = int(np.prod(self.model.hparams.input_shape))
            self._candidates[key] = SampleRadius(noise, dim, self.norms)
        proven, family = self._candidates[key].both(np.array([p_a]), np.array([1 - p_a]))
        return {p: proven[p][0] for p in self.norms}, {p: family[p][0] for p in self.norms}

    def _candidate_radius(self, noise, p_a: float, p: float) -> float:
        """The proven l_p radius of one I-OPT candidate (what the hill climbing maximises)."""
        return float(self._candidate_radii(noise, p_a)[0][p])

    def _predict_iopt(self, batch) -> None:
        """I-OPT per input: hill climbing for the first norm, then every norm's radius."""
        idx, x, y = batch
        first = self.norms[0]
        for i in range(len(idx)):
            start = time.perf_counter()
            xi = x[i : i + 1]
            if self.model.noise is None:  # a standard classifier: Eq. (34) uses f(x)
                reference = int(self.model(xi).argmax(1)[0])
            else:
                seeds = [sample_seed(self.seed, int(idx[i]), 0)]
                counts = self.smoothed.counts(xi, self.n0, seeds=seeds, indices=[int(idx[i])])
                reference = int(counts[0].argmax())
            begin = {"sigma": self.noise.sigma, "beta": getattr(self.noise, "beta", 2.0)}
            begin = {k: v for k, v in begin.items() if k in self.iopt_config.steps}
            res = iopt(
                self.smoothed,
                xi,
                begin,
                reference,
                lambda nz, p_a: self._candidate_radius(nz, p_a, first),
                self.n,
                self.alpha0,
                self.iopt_config,
                seed=self.seed,
                index=int(idx[i]),
            )
            chosen = create_noise(self.iopt_config.family, **res.params)
            seconds = time.perf_counter() - start
            radii = family = dict.fromkeys(self.norms, 0.0)
            if res.prediction != ABSTAIN:
                radii, family = self._candidate_radii(chosen, res.p_a)
            row = result_row(
                idx[i], y[i], res.prediction, seconds, res.p_a, 1 - res.p_a, radii, family
            )
            row.update({f"iopt_{k}": f"{v:.6g}" for k, v in res.params.items()})
            # The history first: a kill between the two re-certifies the input (one more line).
            self.history.write(res.record(idx=int(idx[i]), label=int(y[i]), norm=str(first)))
            self.writer.write(row)

    def on_predict_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.history is not None:
            self.history.close()
