"""An `ngram-lgbm` model's trees as the ONNX graph the scanner runs (`model.onnx`), converted from its
`model.lgbm.txt` by onnxmltools (docs/scan.md, "The n-gram model").

The converter writes one `TreeEnsembleClassifier` (ONNX-ML) reading every feature of the booster (the
whole fitted vocabulary, 20,000 n-grams).  Scanning reads only the n-grams the trees split on
(`vocabulary.json` `columns`, `runtrace.models.ngram_checkpoint`), so the graph's feature ids are
renumbered to those columns' order and its input narrowed to them: a trace's feature row is then as long
as the list of n-grams that can change its score.  The graph is checked against LightGBM's own
predictions on random count rows before it is written, and its sha256 is recorded in `config.json`
(`onnx`) with the sha256 of the booster and the vocabulary it reads; the scanner refuses anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from runtrace.models.spec import (
    CONFIG,
    NGRAM_GRAPHS,
    NGRAM_ONNX_OPSET,
    NGRAM_WEIGHTS,
    VOCABULARY,
    ExportError,
    NgramSpec,
    SpecError,
    one_line,
    read_spec,
)

# Largest difference allowed between P(malicious) from the graph (ONNX Runtime, float32 thresholds and
# leaf sums) and from LightGBM (float64) on the check rows of `_check`.
TOLERANCE = 1e-5
CHECK_ROWS = 512


def export_ngram_onnx(model_dir: str | os.PathLike, seed: int = 0) -> dict:
    """Convert the model's trees to `model.onnx`, check it against LightGBM and record it in
    `config.json`; returns the `onnx` record written.  ExportError (one line) when the directory is not
    an n-gram model or the graph cannot be written or disagrees with LightGBM."""
    import lightgbm
    import onnxmltools

    root = Path(model_dir)
    try:
        spec = read_spec(root)
    except SpecError as e:
        raise ExportError(str(e)) from None
    if not isinstance(spec, NgramSpec):
        raise ExportError(f"{root}: a {spec.kind} model, not an n-gram model")
    try:
        booster_text = (root / NGRAM_WEIGHTS).read_bytes()
        vocabulary_bytes = (root / VOCABULARY).read_bytes()
    except FileNotFoundError as e:
        raise ExportError(f"{root}: not a runtrace model ({Path(e.filename).name} missing)") from None
    try:
        booster = lightgbm.Booster(model_str=booster_text.decode())
        columns = np.asarray(json.loads(vocabulary_bytes)["columns"], dtype=np.int64)
    except Exception as e:  # noqa: BLE001 - LightGBM raises its own error for a damaged model file
        raise ExportError(f"{root}: unreadable model ({one_line(e)})") from None
    if len(columns) == 0 or np.any(np.diff(columns) <= 0) or columns[-1] >= booster.num_feature():
        raise ExportError(f"{root}/{VOCABULARY}: columns are not ascending feature indices of the trees")
    try:
        from onnxmltools.convert.common.data_types import FloatTensorType

        proto = onnxmltools.convert_lightgbm(
            booster,
            name=spec.kind,  # else a random name: the same trees must give the same bytes
            initial_types=[("x", FloatTensorType([None, booster.num_feature()]))],
            zipmap=False,
            target_opset=NGRAM_ONNX_OPSET,
        )
        _read_only_columns(proto, columns)
    except ExportError as e:
        raise ExportError(f"{root}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the converter raises many types; one line for the user
        raise ExportError(f"{root}: cannot convert the trees ({type(e).__name__}: {one_line(e)})") from None
    graph = proto.SerializeToString()
    try:
        difference = _check(graph, booster, columns, np.random.default_rng(seed))
    except Exception as e:  # noqa: BLE001 - ONNX Runtime's own error types, when the graph cannot run
        raise ExportError(
            f"{root}: the converted graph does not run in ONNX Runtime ({one_line(e)})"
        ) from None
    if difference > TOLERANCE:
        raise ExportError(
            f"{root}: the converted graph differs from LightGBM by {difference:.2g} (more than {TOLERANCE:g})"
        )
    _write_atomically(root / NGRAM_GRAPHS["trees"], graph)
    record = {
        "opset": NGRAM_ONNX_OPSET,
        "exporter": f"onnxmltools {onnxmltools.__version__}, lightgbm {lightgbm.__version__}",
        "weights_sha256": hashlib.sha256(booster_text).hexdigest(),
        "vocabulary_sha256": hashlib.sha256(vocabulary_bytes).hexdigest(),
        "graphs": {"trees": hashlib.sha256(graph).hexdigest()},
        "inputs": len(columns),
        "max_difference_from_lightgbm": float(f"{difference:.3g}"),
    }
    config = json.loads((root / CONFIG).read_text())
    config["onnx"] = record
    _write_atomically(root / CONFIG, json.dumps(config, indent=1, sort_keys=True).encode())
    return record


def _read_only_columns(proto, columns: np.ndarray) -> None:
    """Renumber the tree ensemble's feature ids from the booster's features to positions in `columns`
    and narrow the graph's input to len(columns) features."""
    nodes = [n for n in proto.graph.node if n.op_type == "TreeEnsembleClassifier"]
    if len(nodes) != 1:
        raise ExportError(f"expected one TreeEnsembleClassifier in the converted graph, found {len(nodes)}")
    attributes = {a.name: a for a in nodes[0].attribute}
    modes = [m.decode() for m in attributes["nodes_modes"].strings]
    features = np.asarray(attributes["nodes_featureids"].ints, dtype=np.int64)
    split = np.asarray([m != "LEAF" for m in modes], dtype=bool)
    position = np.searchsorted(columns, features)
    inside = position < len(columns)
    known = inside & (columns[np.minimum(position, len(columns) - 1)] == features)
    if np.any(split & ~known):
        raise ExportError("the trees split on n-grams that vocabulary.json does not list")
    renumbered = np.where(split, position, 0)
    del attributes["nodes_featureids"].ints[:]
    attributes["nodes_featureids"].ints.extend(int(v) for v in renumbered)
    (graph_input,) = proto.graph.input
    graph_input.type.tensor_type.shape.dim[1].dim_value = len(columns)
    for output in proto.graph.output:
        # The converter declares the label output as one element; it has one per row, like the
        # probabilities (ONNX Runtime warns at every run otherwise).
        output.type.tensor_type.shape.dim[0].dim_param = "N"


def _check(graph: bytes, booster, columns: np.ndarray, rng: np.random.Generator) -> float:
    """The largest difference in P(malicious) between the graph and LightGBM on random count rows: zeros
    mostly, small counts, and a few large ones, as n-gram counts are."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    counts = rng.poisson(rng.choice([0.3, 2.0, 40.0], size=(CHECK_ROWS, 1)), size=(CHECK_ROWS, len(columns)))
    counts = np.where(rng.random(counts.shape) < 0.5, 0, counts).astype(np.float32)
    counts[0] = 0  # the all-masked row explanations use
    full = np.zeros((CHECK_ROWS, booster.num_feature()), dtype=np.float32)
    full[:, columns] = counts
    expected = booster.predict(full)
    (got,) = session.run(["probabilities"], {"x": counts})
    return float(np.abs(got[:, 1].astype(np.float64) - expected).max(initial=0.0))


def _write_atomically(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)
