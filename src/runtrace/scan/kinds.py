"""Which scanning code runs a model directory, by its kind: the sequence models' graphs (`OnnxModel`:
windows, gradient-ranked occlusion; `score`, `explain`) or an n-gram model's (`NgramModel`: counts of the
whole sequence, every unit occluded exactly; `ngramexplain`)."""

from __future__ import annotations

from pathlib import Path

from runtrace.models.spec import NgramSpec, SpecError, read_spec
from runtrace.scan.explain import Attribution, attribute
from runtrace.scan.ngramexplain import NgramScore, attribute_ngrams, score_ngrams
from runtrace.scan.ngrammodel import NgramModel
from runtrace.scan.onnxmodel import ModelError, OnnxModel
from runtrace.scan.score import Score, score_sequence
from runtrace.scan.sequence import ModelSequence
from runtrace.trace.model import Trace

ScanModel = OnnxModel | NgramModel


def load_model(path: str | Path) -> ScanModel:
    """The model directory's scanning model; ModelError (one line) when it cannot be used."""
    try:
        spec = read_spec(Path(path))
    except SpecError as e:
        raise ModelError(str(e)) from None
    return (NgramModel if isinstance(spec, NgramSpec) else OnnxModel).load(path)


def score(model: ScanModel, seq: ModelSequence) -> Score | NgramScore:
    if isinstance(model, NgramModel):
        return score_ngrams(model, seq)
    return score_sequence(model, seq)


def explain(
    model: ScanModel, trace: Trace, seq: ModelSequence, scored: Score | NgramScore, candidates: int
) -> Attribution:
    """Every unit with its effect (`candidates`: units the sequence models occlude exactly; an n-gram
    model occludes every unit exactly)."""
    if isinstance(model, NgramModel):
        return attribute_ngrams(model, trace, seq, scored)
    return attribute(model, trace, seq, scored, candidates)
