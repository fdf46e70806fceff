"""`runtrace export MODEL`: write the ONNX graphs `scan` and `serve` run, for a saved model.

`runtrace train` exports on its own; this command is for models saved without graphs (by an earlier
runtrace, or by `LstmClassifier.save` alone) and for writing the graphs again after an upgrade.  A
sequence model's graphs are exported from its torch code (`runtrace.models.export`); an n-gram model's
trees are converted by onnxmltools (`runtrace.models.ngram_export`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtrace.cli.app import app, console, fail


@app.command()
def export(
    model: Path = typer.Argument(..., help="Model directory written by `runtrace train`."),
) -> None:
    """Write the model's ONNX graphs (model.items/windows/gradient.onnx; model.onnx for ngram-lgbm) beside
    its weights and record their sha256 in its config.json."""
    report_export(model)


def report_export(model: Path) -> None:
    """Export, print what was written, and turn a failure into one `error:` line (also for `train`)."""
    import json

    from runtrace.models.names import NGRAM_KINDS
    from runtrace.models.spec import CONFIG, GRAPHS, ExportError

    try:
        kind = json.loads((model / CONFIG).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None  # the exporter says what is wrong with the directory
    if kind in NGRAM_KINDS:
        _report_ngram_export(model)
        return
    from runtrace.models.checkpoint import CheckpointError
    from runtrace.models.export import export_onnx

    try:
        record = export_onnx(model)
    except (CheckpointError, ExportError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"{model}: cannot write the graphs ({e.strerror or e})") from None
    sizes = ", ".join(
        f"{GRAPHS[role]} ({(model / GRAPHS[role]).stat().st_size / 1024:,.0f} KiB)" for role in GRAPHS
    )
    worst = max(record["max_difference_from_torch"].values())
    console.print(
        f"ONNX graphs (opset {record['opset']}) written to {model}: {sizes}; "
        f"largest difference from torch on the export check {worst:.1g}",
        highlight=False,
        soft_wrap=True,
    )


def _report_ngram_export(model: Path) -> None:
    from runtrace.models.ngram_export import export_ngram_onnx
    from runtrace.models.spec import NGRAM_GRAPHS, ExportError

    try:
        record = export_ngram_onnx(model)
    except ExportError as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"{model}: cannot write the graph ({e.strerror or e})") from None
    name = NGRAM_GRAPHS["trees"]
    console.print(
        f"ONNX graph (opset {record['opset']}) written to {model}: {name} "
        f"({(model / name).stat().st_size / 1024:,.0f} KiB), reading {record['inputs']:,} n-gram counts; "
        f"largest difference from LightGBM on the export check {record['max_difference_from_lightgbm']:.1g}",
        highlight=False,
        soft_wrap=True,
    )
