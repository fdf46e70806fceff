"""`runtrace export MODEL`: write the ONNX graphs `scan` and `serve` run, for a saved model.

`runtrace train` exports on its own; this command is for models saved without graphs (by an earlier
runtrace, or by `LstmClassifier.save` alone) and for writing the graphs again after an upgrade.
"""

from __future__ import annotations

from pathlib import Path

import typer

from runtrace.cli.app import app, console, fail


@app.command()
def export(
    model: Path = typer.Argument(..., help="Model directory written by `runtrace train`."),
) -> None:
    """Write the model's ONNX graphs (model.items/windows/gradient.onnx) beside its weights and record
    their sha256 in its config.json."""
    report_export(model)


def report_export(model: Path) -> None:
    """Export, print what was written, and turn a failure into one `error:` line (also for `train`)."""
    from runtrace.models.checkpoint import CheckpointError
    from runtrace.models.export import ExportError, export_onnx
    from runtrace.models.spec import GRAPHS

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
