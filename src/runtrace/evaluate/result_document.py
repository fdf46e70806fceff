"""The result document: an evaluation's results as typed objects, one type per concept (capa's result
document is the model).  `metrics` computes figures as these types, `build_results` assembles the
document, `metrics.json` is written from it once, and the markdown report (`render_report`), the plots,
the `runtrace evaluate` table, the demo's table and `runtrace results` (`render_results_page`) all read it
back through `EvaluationResults.read`, never by digging in raw JSON.

The JSON layout is the one reports have always had (so older `metrics.json` files still read): a
metric is `{"value", "low", "high"}` with `null` where undefined, counts carry `n`, `n_malicious` and
`n_benign`, and the fixed-threshold figures sit under `per_file_at_0.5`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FIXED_THRESHOLD = 0.5  # the paper's decision threshold: the figures under `per_file_at_0.5`


class ResultsError(ValueError):
    """A metrics.json that cannot be read; the message is one line naming the file."""


class _Schema(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)


class Estimate(_Schema):
    """A point value with its bootstrap interval; None where undefined (one class only, no files)."""

    value: float | None
    low: float | None = None
    high: float | None = None


class Counts(_Schema):
    """The confusion counts behind a figure; `n`, `n_malicious` and `n_benign` are their sums."""

    tp: int
    fp: int
    tn: int
    fn: int
    n: int
    n_malicious: int
    n_benign: int

    @classmethod
    def of(cls, tp: int, fp: int, tn: int, fn: int) -> Counts:
        return cls(tp=tp, fp=fp, tn=tn, fn=fn, n=tp + fp + tn + fn, n_malicious=tp + fn, n_benign=tn + fp)


class BootstrapSettings(_Schema):
    n_resamples: int
    confidence: float
    seed: int
    stratified: bool = True


class FileMetrics(_Schema):
    """Per-file figures (`metrics` keyed by name: accuracy, fpr, tpr, roc_auc, tpr_at_fpr_1pct, ...)."""

    metrics: dict[str, Estimate]
    counts: Counts
    bootstrap: BootstrapSettings
    resolution_limited: dict[str, bool] = {}  # per FPR target: too few benign files to measure it

    def __getitem__(self, name: str) -> Estimate:
        return self.metrics[name]


class SliceMetrics(FileMetrics):
    dimension: str  # "arch", "kind", "compiler", "trace length (instructions)", ...
    value: str

    @classmethod
    def of(cls, dimension: str, value: str, figures: FileMetrics) -> SliceMetrics:
        return cls(dimension=dimension, value=value, **dict(figures))


class WindowMetrics(_Schema):
    """Window-level point figures (leaky protocol only): no interval, windows of a file are not
    independent."""

    metrics: dict[str, float | None]
    counts: Counts


class FoldResult(_Schema):
    fold: int
    n_train: int
    n_test: int
    threshold: float
    threshold_source: str
    fit_seconds: float
    unit: str  # "file" or "window"
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    fpr: float | None = None
    tpr: float | None = None
    precision: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    tpr_at_fpr_1pct: float | None = None
    tpr_at_fpr_0_1pct: float | None = Field(None, alias="tpr_at_fpr_0.1pct")
    features: list[str] | None = None  # metadata model only: the manifest columns it found
    shared_code: dict | None = None  # "-noshared" models only: what the toolchain ablation removed


class BenignFile(_Schema):
    """A held-out benign file among those a model scored highest out of fold: at a low target FPR these
    few files decide the threshold (with n benign files, 1 % FPR lets floor(n / 100) of them above it)."""

    sha256: str
    score: float
    group: str  # its origin group (the dataset's `group`)
    traits: dict[str, str] = {}  # kind, arch, compiler where the files table has them


class ModelResult(_Schema):
    """One model under one protocol on one dataset."""

    dataset: str
    representation: str
    protocol: str
    model: str
    per_file: FileMetrics  # decisions at the thresholds fitted on training folds
    per_file_at_fixed: FileMetrics = Field(alias="per_file_at_0.5")
    folds: list[FoldResult] = []
    slices: list[SliceMetrics] = []
    per_window: WindowMetrics | None = None
    per_file_aggregation: str | None = None
    top_benign: list[BenignFile] = []  # the held-out benign files scored highest, highest first


class ProtocolRunInfo(_Schema):
    dataset: str
    representation: str
    protocol: str
    unit: str
    n_folds: int
    window: dict | None = None
    notes: list[str] = []
    skipped_models: dict[str, str] = {}  # model -> why it did not run
    # How the protocol split the files: by-family's cap, temporal's cut and files per class and year.
    info: dict = {}


class DatasetInfo(_Schema):
    name: str
    representation: str
    files: int
    lexicon: int
    malicious: int | None = None
    benign: int | None = None
    fingerprint: str = ""  # sha256 over the sorted (sha256, label) pairs
    manifest_sha256: str | None = None


class MachineInfo(_Schema):
    platform: str = ""
    machine: str = ""
    python: str = ""
    cpu_count: int | None = None
    packages: dict[str, str | None] = {}

    def describe(self) -> str:
        return f"{self.platform}, {self.cpu_count} CPUs, Python {self.python}"


class RunSettings(_Schema):
    """The run's configuration (`RunConfig`); fields added there later are kept as they come."""

    model_config = ConfigDict(extra="allow", frozen=True)

    folds: int
    seed: int
    target_fpr: float
    threshold_fit: str
    window: dict | str = "lstm defaults"


class EvaluationResults(_Schema):
    run: str
    command: str
    date: str  # UTC, "YYYY-MM-DD HH:MM:SS"
    machine: MachineInfo
    config: RunSettings
    datasets: list[DatasetInfo]
    bootstrap: BootstrapSettings
    protocol_runs: list[ProtocolRunInfo] = []
    skipped_protocols: list[str] = []
    results: list[ModelResult]

    def result(self, dataset: str, protocol: str, model: str) -> ModelResult:
        return next(r for r in self.results if (r.dataset, r.protocol, r.model) == (dataset, protocol, model))

    def models(self, dataset: str, protocol: str) -> list[str]:
        """The models that produced results for this dataset and protocol, in run order."""
        return [r.model for r in self.results if (r.dataset, r.protocol) == (dataset, protocol)]

    def write(self, path: Path) -> Path:
        path.write_text(self.model_dump_json(by_alias=True, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> EvaluationResults:
        """Read a report's metrics.json (or the report directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "metrics.json"
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as e:
            raise ResultsError(f"{path}: cannot read ({e.strerror or e})") from None
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "top level"
            raise ResultsError(
                f"{path}: not an evaluation's metrics.json ({where}: {first['msg']}; "
                f"{e.error_count()} problem(s))"
            ) from None
