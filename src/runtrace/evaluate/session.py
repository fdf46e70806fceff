"""One evaluation into one report directory, as `runtrace evaluate` runs it: resumable, and idle when the
report is already up to date.

A session is the datasets, models, protocols and settings of a run, and the directory its report goes
to.  Its *run key* hashes all of them (datasets by content, the bootstrap and the corpus manifest too):

- a directory whose report was completed under the same key is up to date, and nothing runs;
- a directory holding another run's report is refused, unless the caller asks to overwrite it (which also
  forgets the folds saved there);
- otherwise the run starts, reusing every fold an earlier, interrupted run saved under `checkpoints/`
  (`fold_store`), and the key is written beside them once the report is complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from runtrace.evaluate.fold_store import DIR_NAME, dataset_content_hash, finished_folds, write_atomically
from runtrace.evaluate.names import DEFAULT_BOOTSTRAP
from runtrace.evaluate.registry import ModelSpec
from runtrace.evaluate.result_document import EvaluationResults
from runtrace.evaluate.runner import EvaluationRun, RunConfig, run_evaluation
from runtrace.evaluate.write_report import write_report
from runtrace.models.interface import SequenceData

COMPLETE = "complete.json"  # beside the saved folds: the run key of the completed report


class SessionError(ValueError):
    """The report directory cannot take this run (one line)."""


def load_datasets(paths: list[Path], representation: str | None = None) -> list[tuple[str, SequenceData]]:
    """(name, dataset) of each distinct path, keeping only `representation`'s (None: all);
    DatasetError for a directory that is not a dataset, SessionError when none is left."""
    from runtrace.represent.dataset import SequenceDataset

    loaded = []
    for path in dict.fromkeys(paths):
        data = SequenceDataset.load(path)
        if representation is None or data.representation == representation:
            loaded.append((str(path), data))
    if not loaded:
        wanted = representation.upper() if representation else "readable"
        raise SessionError(f"no {wanted} dataset among {' '.join(map(str, paths))}")
    return loaded


@dataclass
class EvaluationSession:
    out: Path  # the report directory
    datasets: list[tuple[str, SequenceData]]
    models: list[ModelSpec]
    protocols: list[str]
    config: RunConfig
    bootstrap: int = DEFAULT_BOOTSTRAP  # resamples per interval
    manifest_sha256: str | None = None  # of the corpus manifest joined to the datasets

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out) / DIR_NAME

    @property
    def report(self) -> Path:
        return Path(self.out) / "report.md"

    def run_key(self) -> str:
        """Hash of everything the report depends on (datasets, models, protocols, settings)."""
        settings = {
            "datasets": [dataset_content_hash(d) for _, d in self.datasets],
            "models": [m.name for m in self.models],
            "protocols": self.protocols,
            "config": asdict(self.config),
            "bootstrap": self.bootstrap,
            "manifest": self.manifest_sha256,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()

    def completed_key(self) -> str | None:
        """The run key of the report completed in this directory, if any."""
        try:
            return json.loads((self.checkpoint_dir / COMPLETE).read_text())["run"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def up_to_date(self) -> bool:
        return self.report.exists() and self.completed_key() == self.run_key()

    def saved_folds(self) -> int:
        """Folds finished and saved so far, by this run or an earlier one."""
        return finished_folds(self.checkpoint_dir)

    def start(self, overwrite: bool = False) -> int:
        """Make the directory ready for this run; returns the folds an earlier run saved there (which the
        run reuses where they are its own).  SessionError when it holds another run's report and
        `overwrite` is off; with `overwrite` the saved folds are forgotten."""
        if self.report.exists() and not overwrite and not self.up_to_date():
            raise SessionError(
                f"{self.out} already holds a report of another run (pass --overwrite to replace it)"
            )
        if overwrite:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        return self.saved_folds()

    def run(self, show_progress: bool = True) -> EvaluationRun:
        return run_evaluation(
            self.datasets,
            self.models,
            self.protocols,
            self.config,
            show_progress=show_progress,
            checkpoint_dir=self.checkpoint_dir,
        )

    def write(self, result: EvaluationRun, command: str) -> tuple[EvaluationResults, dict[str, Path]]:
        """Write the report of `result` (`write_report`) and mark it complete under this run's key."""
        written = write_report(
            result,
            self.out,
            command=command,
            n_resamples=self.bootstrap,
            seed=self.config.seed,
            manifest_sha256=self.manifest_sha256,
        )
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        key = json.dumps({"run": self.run_key()}).encode()
        write_atomically(self.checkpoint_dir / COMPLETE, lambda fh: fh.write(key))
        return written
