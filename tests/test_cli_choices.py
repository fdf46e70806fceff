"""The command line's choice Enums name exactly what the stages accept, and building them loads no
heavy package (`cli/choices.py` reads `represent.names`, `models.names` and `evaluate.names`)."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from runtrace.cli import choices
from runtrace.cli.app import app
from runtrace.evaluate.names import AUTO, HOLDOUT, INNER_CV, PROTOCOLS
from runtrace.models.names import NGRAM_KINDS, VAL_BY
from runtrace.models.spec import AGGREGATIONS, BLOCK_ENCODERS, KINDS, POOLINGS
from runtrace.represent.encode import REPRESENTATIONS
from runtrace.represent.windows import WINDOW_MODES


def values(enum) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


def test_choices_match_the_stages() -> None:
    assert values(choices.Representation) == REPRESENTATIONS
    assert values(choices.ModelKind) == (*KINDS, *NGRAM_KINDS)
    assert values(choices.RepresentationOrAll) == (*REPRESENTATIONS, "all")
    assert values(choices.Protocol) == PROTOCOLS
    assert values(choices.ProtocolOrAll) == (*PROTOCOLS, "all")
    assert values(choices.ThresholdFit) == (AUTO, INNER_CV, HOLDOUT)
    assert values(choices.Windowing) == WINDOW_MODES
    assert values(choices.Aggregation) == AGGREGATIONS
    assert values(choices.Pooling) == POOLINGS
    assert values(choices.BlockEncoder) == BLOCK_ENCODERS
    assert values(choices.ValidationBy) == VAL_BY


def test_building_the_command_line_loads_neither_numpy_nor_torch() -> None:
    code = (
        "import sys, typer.main\n"
        "from runtrace.cli.app import app\n"
        "typer.main.get_command(app)  # every command registered, every option built\n"
        "assert 'runtrace.cli.corpus_cmd' in sys.modules\n"
        "heavy = {'numpy', 'torch', 'sklearn', 'pyarrow'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_checkpoint_spec_names_the_estimators_kinds() -> None:
    """`models/spec.py` (read by the torch-free scanner) and the estimators agree on the model kinds."""
    from runtrace.models.estimator import CLASSIFIERS

    assert {kind: c.representation for kind, c in CLASSIFIERS.items()} == KINDS
    assert all(c.kind == kind for kind, c in CLASSIFIERS.items())


def test_the_n_gram_kinds_are_the_evaluations_models() -> None:
    """`runtrace train --kind K` for each n-gram kind fits the evaluation's model of that name, and
    `runtrace calibrate` reads that model's out-of-fold scores for it."""
    from runtrace.evaluate.names import NGRAM_MODELS
    from runtrace.evaluate.registry import MODELS, BuildContext
    from runtrace.models.ngram import NGRAM_CLASSES

    kinds = {"ngram-lgbm", "ngram-lgbm-monotone"}
    assert set(NGRAM_MODELS) == set(NGRAM_KINDS) == set(NGRAM_CLASSES) == kinds
    for kind, cls in NGRAM_CLASSES.items():
        built = MODELS[NGRAM_MODELS[kind]].build(BuildContext("bsm", "by-file", 0, {}))
        assert type(built) is cls and built.kind == kind


def test_a_value_outside_the_choices_is_one_line_naming_the_option() -> None:
    result = CliRunner().invoke(app, ["evaluate", "-d", "x", "-o", "y", "--protocol", "by-moon"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--protocol" in lines[0], result.output
    assert "by-moon" in lines[0] and "by-origin" in lines[0]


def test_a_port_outside_tcps_range_is_one_line() -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "99999"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--port" in lines[0], result.output
