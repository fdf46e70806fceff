"""What a trained model records about its training data (`config.json` `data`, `spec.DataSpec`): how the
sequences were built, the shortest trace and the tracer revisions, for every model kind."""

from __future__ import annotations

import numpy as np

from runtrace.models.interface import SequenceData
from runtrace.models.spec import DataSpec


def shortest_trace(data: SequenceData) -> int | None:
    """Executed instructions of the dataset's shortest trace: its `--min-instructions` floor, or the
    shortest file when that is longer; None when the dataset says neither (a stand-in dataset)."""
    floor = data.min_instructions
    files = data.files
    if "n_instructions" not in files.column_names or files.num_rows == 0:
        return floor
    return max(int(np.asarray(files.column("n_instructions")).min()), floor or 0)


def tracer_versions(data: SequenceData) -> list[str] | None:
    """The distinct tracer revisions that wrote the dataset's traces; None when it does not record them
    (a dataset built before it did, a stand-in dataset)."""
    files = data.files
    if "tracer_version" not in files.column_names:
        return None
    versions = {v for v in files.column("tracer_version").to_pylist() if v}
    return sorted(versions) or None


def training_data_spec(data: SequenceData) -> DataSpec:
    """How `data` was built, its shortest trace (the scanner judges none shorter) and its tracer
    revisions."""
    return DataSpec(
        normalisation=data.normalisation,
        api=data.api,
        api_args=data.api_args,
        max_tokens=data.max_tokens,
        min_instructions=shortest_trace(data),
        tracer_versions=tracer_versions(data),
    )
