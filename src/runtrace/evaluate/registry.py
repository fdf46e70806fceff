"""The models `runtrace evaluate --models` can name, and how to build a fresh one for each fold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from runtrace.evaluate.baselines import MetadataBaseline, NgramCache, NgramLogisticRegression
from runtrace.evaluate.names import BY_ORIGIN, HOLDOUT, INNER_CV, NOSHARED_SUFFIX, SEQUENCE_MODELS
from runtrace.models.interface import FileClassifier
from runtrace.models.ngram import NgramLightGBM, NgramLightGBMMonotone
from runtrace.represent.names import BSM


class ModelUnavailable(RuntimeError):
    """A named model cannot be built here (its package is missing or not written yet)."""


@dataclass
class BuildContext:
    """What a model builder may use: the representation and protocol, the run's seed, caches shared
    across the folds of one dataset view (never across views, whose row numbers mean different things),
    and options given for this model (`--lstm-epochs` ...)."""

    representation: str
    protocol: str
    seed: int
    shared: dict
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    # How the decision threshold is fitted by default: inner cross-validation costs several extra fits
    # per fold, fine for baselines; an LSTM uses a held-out part of its training fold instead.
    threshold_fit: str
    build: Callable[[BuildContext], FileClassifier]


def _ngram_cache(ctx: BuildContext) -> NgramCache:
    return ctx.shared.setdefault("ngram_cache", NgramCache())


def _build_neighbours(ctx: BuildContext) -> FileClassifier:
    from runtrace.evaluate.neighbour_vote import NeighbourVote, SignatureCache

    return NeighbourVote(cache=ctx.shared.setdefault("signature_cache", SignatureCache()))


def _build_sequence_model(name: str) -> Callable[[BuildContext], FileClassifier]:
    """A builder of the model kind `SEQUENCE_MODELS[name]` names for the representation."""

    def build(ctx: BuildContext) -> FileClassifier:
        from runtrace.models.estimator import CLASSIFIERS  # here: torch is imported only when asked for

        kind = SEQUENCE_MODELS[name].get(ctx.representation)
        if kind is None:
            raise ModelUnavailable(f"{name}: none for representation {ctx.representation!r}")
        # Early stopping draws its validation files from the training fold; under by-origin it must draw
        # whole groups, or it would stop on families the network is already training on.
        val_by = "group" if ctx.protocol == BY_ORIGIN else "file"
        return CLASSIFIERS[kind](**{"seed": ctx.seed, "val_by": val_by, **ctx.options})

    return build


# Option of the "-noshared" variants (`runtrace evaluate --shared-min-share`): a block is toolchain code
# when at least this share of each class's training files executes it.
MIN_SHARE_OPTION = "min_share"


def _without_shared_code(name: str, build: Callable[[BuildContext], FileClassifier]) -> ModelSpec:
    """The toolchain ablation of model `name`: `models.shared_code.SharedCodeFilter` around it."""

    def build_filtered(ctx: BuildContext) -> FileClassifier:
        from runtrace.models.names import DEFAULT_MIN_SHARE
        from runtrace.models.shared_code import SharedCodeFilter

        if ctx.representation != BSM:
            # An ISM token is one instruction, shared by nearly every file of both classes: removing
            # the shared ones would remove the representation, not the toolchain (models/shared_code.py).
            raise ModelUnavailable(f"{name}{NOSHARED_SUFFIX}: BSM only (blocks are what it removes)")
        options = dict(ctx.options)
        min_share = options.pop(MIN_SHARE_OPTION, DEFAULT_MIN_SHARE)
        inner = build(BuildContext(ctx.representation, ctx.protocol, ctx.seed, ctx.shared, options))
        return SharedCodeFilter(inner, min_share=min_share)

    return ModelSpec(
        f"{name}{NOSHARED_SUFFIX}",
        f"{name} without the code blocks most training files of both classes execute "
        "(toolchain ablation; BSM only)",
        MODELS[name].threshold_fit,
        build_filtered,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "lstm",
            "LSTM over the token sequence (IsmLstm / BsmLstm)",
            HOLDOUT,
            _build_sequence_model("lstm"),
        ),
        ModelSpec(
            "transformer",
            "BSM only: the BSM block encoder, a small pre-norm transformer over blocks (BsmTransformer)",
            HOLDOUT,
            _build_sequence_model("transformer"),
        ),
        ModelSpec(
            "ngram-lr",
            "token 1-3-gram counts, tf-idf, logistic regression",
            INNER_CV,
            lambda ctx: NgramLogisticRegression(seed=ctx.seed, cache=_ngram_cache(ctx)),
        ),
        ModelSpec(
            "ngram-lgbm",
            "token 1-3-gram counts, LightGBM",
            INNER_CV,
            lambda ctx: NgramLightGBM(seed=ctx.seed, cache=_ngram_cache(ctx)),
        ),
        ModelSpec(
            "ngram-lgbm-monotone",
            "token 1-3-gram counts, LightGBM, every count constrained to raise the score (evidence of "
            "malice only)",
            INNER_CV,
            lambda ctx: NgramLightGBMMonotone(seed=ctx.seed, cache=_ngram_cache(ctx)),
        ),
        ModelSpec(
            "metadata",
            "shortcut audit: file metadata only (arch, kind, size, sections, linker, trace length, stop)",
            INNER_CV,
            lambda ctx: MetadataBaseline(seed=ctx.seed),
        ),
        ModelSpec(
            "neighbours",
            "5 nearest training files by MinHash Jaccard of the distinct tokens (BSM: executed blocks), "
            "Jaccard-weighted vote (the training share of malware as one pseudo-neighbour)",
            INNER_CV,
            _build_neighbours,
        ),
    )
}
# The toolchain ablations.  Their n-gram models count without the shared cache: a filtered file's
# n-grams depend on the fold's removed set, so counts cannot be shared between folds.
MODELS.update(
    (spec.name, spec)
    for spec in (
        _without_shared_code("lstm", _build_sequence_model("lstm")),
        _without_shared_code("transformer", _build_sequence_model("transformer")),
        _without_shared_code("ngram-lr", lambda ctx: NgramLogisticRegression(seed=ctx.seed)),
        _without_shared_code("ngram-lgbm", lambda ctx: NgramLightGBM(seed=ctx.seed)),
    )
)


def resolve_models(names: list[str]) -> list[ModelSpec]:
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise KeyError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    return [MODELS[n] for n in dict.fromkeys(names)]
