"""The decision threshold a model directory carries, and the false-positive rate it was chosen for.

A probability is not a verdict: `runtrace scan` flags a file when P(malicious) >= the threshold, and
the threshold only means something together with the FPR it was calibrated for on *training* data
(`runtrace.evaluate.thresholds.threshold_for_fpr`).  A model directory states both in
`calibration.json`:

    {"format": "runtrace-calibration", "version": 1,
     "threshold": 0.83, "target_fpr": 0.01,
     "source": "out-of-fold scores of 5-fold grouped CV, 1,204 benign training files",
     "model_version": "2025.12-bsm"}

`threshold` and `target_fpr` are required; `source` and `model_version` are free text shown to the
analyst.  The same object may instead sit under a `calibration` key of `config.json`.  A model without
either is scanned at 0.5 and every result says the threshold is uncalibrated.

Version 2 adds an optional `probability` object: Platt scaling of the model's score,

    "probability": {"method": "platt", "slope": 0.27, "intercept": -0.25, "source": "..."}

meaning P(malicious) = sigmoid(slope * logit(score) + intercept).  Why: a model's raw score is not a
probability one can read.  The n-gram LightGBM's boosted trees, trained to near-zero loss, answer
0.99999 for a file they know nothing about and put a quarter of held-out benign files above 0.5; only
the threshold separated the classes.  The map is fitted on the same out-of-fold scores the threshold is
chosen from (`runtrace calibrate`), so P says how often files of that score were malicious among files
the model had not seen.  The map is increasing, so verdicts do not change; with it, `threshold` is on
the mapped scale (the raw threshold, mapped), and every probability a scan reports (the file's, each
window's, an explanation's) is mapped too.

Also optional (version 2 readers that predate it ignore it): `recall_by_api_calls`, how much of the
held-out malware the threshold flagged, per decade of API calls the programs made in the emulator,

    "recall_by_api_calls": {"source": "...", "bins": [
        {"api_calls_min": 10, "api_calls_max": 99, "malicious": 44, "flagged": 2}, ...]}

so a scan can say when a benign verdict rests on a program that did too little to show its behaviour
(`runtrace.evaluate.activity`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from runtrace.models.aggregation import platt
from runtrace.models.spec import CONFIG

CALIBRATION_FILE = "calibration.json"
FORMAT_NAME = "runtrace-calibration"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
UNCALIBRATED_THRESHOLD = 0.5


class CalibrationError(ValueError):
    """A calibration file that is present but unusable (one line)."""


@dataclass(frozen=True)
class ProbabilityMap:
    """Platt scaling: P = sigmoid(slope * logit(score) + intercept), slope > 0 (increasing)."""

    slope: float
    intercept: float
    source: str

    def __call__(self, score):
        """The mapped probability of a score or an array of scores (float64, same shape)."""
        return platt(score, self.slope, self.intercept)

    def describe(self) -> str:
        return f"Platt scaling (slope {self.slope:.4g}, intercept {self.intercept:.4g}) of {self.source}"


@dataclass(frozen=True)
class RecallBin:
    """Of the held-out malware that made `api_calls_min` to `api_calls_max` API calls (None: no upper
    end), how many files there were and how many the threshold flagged."""

    api_calls_min: int
    api_calls_max: int | None
    malicious: int
    flagged: int

    @property
    def recall(self) -> float:
        return self.flagged / self.malicious

    def holds(self, api_calls: int) -> bool:
        return api_calls >= self.api_calls_min and (
            self.api_calls_max is None or api_calls <= self.api_calls_max
        )

    def describe(self) -> str:
        upper = "or more" if self.api_calls_max is None else f"to {self.api_calls_max:,}"
        return f"{self.api_calls_min:,} {upper}"


@dataclass(frozen=True)
class RecallByApiCalls:
    bins: tuple[RecallBin, ...]
    source: str

    def bin_for(self, api_calls: int) -> RecallBin | None:
        return next((b for b in self.bins if b.holds(api_calls)), None)


@dataclass(frozen=True)
class Calibration:
    threshold: float  # on the mapped scale when `probability_map` is set
    target_fpr: float | None  # None: not calibrated for any FPR
    source: str
    model_version: str | None = None
    probability_map: ProbabilityMap | None = None  # None: the model's score is reported as P
    recall_by_api_calls: RecallByApiCalls | None = None  # None: not measured

    @property
    def calibrated(self) -> bool:
        return self.target_fpr is not None


def _check_probability(value, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CalibrationError(f"{where}: {what} must be a number, not {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise CalibrationError(f"{where}: {what} must be between 0 and 1, not {value}")
    return float(value)


def _from_object(obj: dict, where: str) -> Calibration:
    if not isinstance(obj, dict):
        raise CalibrationError(f"{where}: calibration must be a JSON object")
    if "format" in obj and (obj.get("format") != FORMAT_NAME or obj.get("version") not in READABLE_VERSIONS):
        raise CalibrationError(
            f"{where}: unsupported calibration format {obj.get('format')} v{obj.get('version')}"
        )
    for key in ("threshold", "target_fpr"):
        if key not in obj:
            raise CalibrationError(f"{where}: '{key}' missing")
    version = obj.get("model_version")
    return Calibration(
        threshold=_check_probability(obj["threshold"], "threshold", where),
        target_fpr=_check_probability(obj["target_fpr"], "target_fpr", where),
        source=str(obj.get("source") or where),
        model_version=str(version) if version is not None else None,
        probability_map=_map_from_object(obj.get("probability"), where),
        recall_by_api_calls=_recall_from_object(obj.get("recall_by_api_calls"), where),
    )


def _recall_from_object(obj, where: str) -> RecallByApiCalls | None:
    if obj is None:
        return None
    bins = obj.get("bins") if isinstance(obj, dict) else None
    if not isinstance(bins, list):
        raise CalibrationError(f"{where}: recall_by_api_calls must be an object with a list of bins")
    parsed = []
    for b in bins:
        try:
            bin_ = RecallBin(**b)
        except TypeError:  # not an object, or not a bin's four keys
            bin_ = None
        if bin_ is None or not _valid_bin(bin_):
            raise CalibrationError(
                f"{where}: recall_by_api_calls bin {b!r} must hold api_calls_min, api_calls_max (or null), "
                "malicious (> 0) and flagged (at most malicious) as whole numbers"
            )
        parsed.append(bin_)
    return RecallByApiCalls(tuple(parsed), str(obj.get("source") or where))


def _valid_bin(b: RecallBin) -> bool:
    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    upper_ok = b.api_calls_max is None or whole(b.api_calls_max)
    counts_ok = whole(b.malicious) and whole(b.flagged) and b.flagged <= b.malicious
    return whole(b.api_calls_min) and upper_ok and counts_ok and b.malicious > 0


def _map_from_object(obj, where: str) -> ProbabilityMap | None:
    if obj is None:
        return None
    if not isinstance(obj, dict) or obj.get("method") != "platt":
        raise CalibrationError(f"{where}: probability must be an object with method 'platt'")
    values = []
    for key in ("slope", "intercept"):
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise CalibrationError(f"{where}: probability {key} must be a number, not {value!r}")
        values.append(float(value))
    if values[0] <= 0:
        raise CalibrationError(
            f"{where}: probability slope must be positive (an increasing map), not {values[0]}"
        )
    return ProbabilityMap(values[0], values[1], str(obj.get("source") or where))


def read_calibration(model_dir: str | Path, config: dict | None = None) -> Calibration:
    """The model directory's calibration, or the uncalibrated default.  `config`: the directory's
    config.json when the caller has it (else it is read here)."""
    root = Path(model_dir)
    path = root / CALIBRATION_FILE
    if path.exists():
        try:
            obj = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CalibrationError(f"{path}: unreadable ({' '.join(str(e).split())})") from None
        return _from_object(obj, str(path))
    if config is None:
        try:
            config = json.loads((root / CONFIG).read_text())
        except (OSError, ValueError):
            config = None  # the model loader reports an unreadable config.json
    if isinstance(config, dict) and config.get("calibration") is not None:
        return _from_object(config["calibration"], f"{root / CONFIG} (calibration)")
    return Calibration(
        UNCALIBRATED_THRESHOLD, None, "uncalibrated default (the model has no calibration.json)"
    )


def write_calibration(
    model_dir: str | Path,
    threshold: float,
    target_fpr: float,
    source: str,
    model_version: str | None = None,
    probability_map: ProbabilityMap | None = None,
    recall_by_api_calls: RecallByApiCalls | None = None,
) -> Path:
    """Write `calibration.json` into a model directory (for whoever trains and calibrates the model);
    with a probability map, `threshold` is on the mapped scale.  Version 1 when there is no map, so
    older readers keep reading what they understand."""
    where = str(Path(model_dir) / CALIBRATION_FILE)
    obj = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION if probability_map is not None else 1,
        "threshold": _check_probability(threshold, "threshold", where),
        "target_fpr": _check_probability(target_fpr, "target_fpr", where),
        "source": source,
    }
    if model_version is not None:
        obj["model_version"] = model_version
    if probability_map is not None:
        m = probability_map
        obj["probability"] = {
            "method": "platt",
            "slope": m.slope,
            "intercept": m.intercept,
            "source": m.source,
        }
    if recall_by_api_calls is not None:
        obj["recall_by_api_calls"] = {
            "source": recall_by_api_calls.source,
            "bins": [asdict(b) for b in recall_by_api_calls.bins],
        }
    path = Path(where)
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return path
