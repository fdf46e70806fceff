"""Model checkpoints that are safe to load: nothing in them can execute code.

A checkpoint is a directory (the files and their names: `runtrace.models.spec`): `config.json` (format,
version, model kind, every configuration dataclass), `vocabulary.json` (the fitted vocabularies, as
token strings), `model.safetensors` (the weights: a JSON header and raw tensor bytes), `history.json`
(the training log) and, once exported (`runtrace.models.export`), the ONNX graphs the scanner runs.

`torch.load` (pickle) is never used; weights are read with `safetensors.torch.load_file`, the rest with
`json`.  A model shipped to analysts can therefore be opened without trusting whoever made it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from runtrace.models.spec import CONFIG, FORMAT_NAME, FORMAT_VERSION, GRAPHS, HISTORY, VOCABULARY, WEIGHTS


class CheckpointError(ValueError):
    """A directory that is not a readable runtrace model."""


def save_checkpoint(
    path: str | os.PathLike, config: dict, vocabularies: dict, state: dict[str, torch.Tensor], history: list
) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors wants contiguous, unshared CPU tensors.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(out / WEIGHTS), metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION)})
    (out / VOCABULARY).write_text(json.dumps(vocabularies))
    (out / HISTORY).write_text(json.dumps(history, indent=1))
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **config}
    (out / CONFIG).write_text(json.dumps(header, indent=1, sort_keys=True))
    for name in GRAPHS.values():  # graphs of earlier weights: export writes the new ones
        (out / name).unlink(missing_ok=True)
    return out


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict, dict[str, torch.Tensor], list]:
    root = Path(path)
    try:
        config = json.loads((root / CONFIG).read_text())
        vocabularies = json.loads((root / VOCABULARY).read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{root}: not a runtrace model ({Path(e.filename).name} missing)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{root}: unreadable model ({e})") from None
    if config.get("format") != FORMAT_NAME or config.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{root}: unsupported model format {config.get('format')} v{config.get('version')}"
        )
    try:
        state = load_file(str(root / WEIGHTS), device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{root}: not a runtrace model ({WEIGHTS} missing)") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{root}/{WEIGHTS}: unreadable weights ({e})") from None
    history_path = root / HISTORY
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    return config, vocabularies, state, history
