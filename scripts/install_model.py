"""Install a trained model directory as another (what `make install-default-model` runs to ship
`make reproduce`'s model as the scanner's default): the files its kind needs
(`runtrace.models.spec.model_files`: an LSTM's or transformer's weights, vocabulary, history and three
graphs; an n-gram model's trees, vocabulary and graph), its `calibration.json` and its similarity index
(`similar/`), and nothing else (no training logs, no stale graphs of another kind).

    python scripts/install_model.py SOURCE DEST

Every file is checked to be there before DEST is touched; DEST is then replaced as a whole.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from runtrace.models.spec import SpecError, model_files, read_spec
from runtrace.scan.calibration import CALIBRATION_FILE

INDEX = "similar"


def install(source: Path, dest: Path) -> list[str]:
    """Copy the model in `source` to `dest` (replaced); returns the names copied.  SystemExit with one
    line when `source` lacks something."""
    try:
        spec = read_spec(source)
    except SpecError as e:
        raise SystemExit(f"error: {e}") from None
    names = [*model_files(spec), CALIBRATION_FILE]
    missing = [n for n in [*names, INDEX] if not (source / n).exists()]
    if missing:
        raise SystemExit(f"error: {source}: a {spec.kind} model needs {', '.join(missing)}, which it lacks")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    for name in names:
        shutil.copy2(source / name, staging / name)
    shutil.copytree(source / INDEX, staging / INDEX)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return [*names, f"{INDEX}/"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    copied = install(args.source, args.dest)
    print(f"{args.dest}: {', '.join(copied)}")


if __name__ == "__main__":
    main(sys.argv[1:])
