"""The evaluation's names, defined once in a module that imports nothing: the protocols, how a fold's
threshold is fitted, the false-positive rate it aims for and by-family's default cap.  `runtrace
evaluate` and `runtrace calibrate` build their options from here without loading scikit-learn;
`protocols`, `registry`, `runner` and `thresholds` use the same values."""

LEAKY = "leaky"
BY_FILE = "by-file"
BY_ORIGIN = "by-origin"
BY_FAMILY = "by-family"
TEMPORAL = "temporal"
PROTOCOLS = (LEAKY, BY_FILE, BY_ORIGIN, BY_FAMILY, TEMPORAL)

# Where a fold's decision threshold comes from: out-of-fold scores of an inner cross-validation of the
# training fold, or a held-out part of it; AUTO takes each model's own choice (`registry.ModelSpec`).
AUTO = "auto"
INNER_CV = "inner-cv"
HOLDOUT = "holdout"
THRESHOLD_FITS = (AUTO, INNER_CV, HOLDOUT)
DEFAULT_TARGET_FPR = 0.01  # the FPR a threshold is chosen for (per training fold; `runtrace calibrate`)

# The sequence models `--models` can name: per representation, the model kind (`models.names.KINDS`) each
# trains.  `runtrace calibrate` reads it the other way round, to take a trained model's threshold from the
# evaluation of its own kind.
SEQUENCE_MODELS = {"lstm": {"ism": "ism-lstm", "bsm": "bsm-lstm"}, "transformer": {"bsm": "bsm-transformer"}}
# The n-gram models `runtrace train` also ships (`models.names.NGRAM_KINDS`), by kind: the evaluation's
# model of that name (it reads either representation, so the trained model's own is its calibration's).
NGRAM_MODELS = {"ngram-lgbm": "ngram-lgbm", "ngram-lgbm-monotone": "ngram-lgbm-monotone"}

DEFAULT_FOLDS = 5  # k of the k-fold protocols
DEFAULT_SEED = 0  # of the folds, the models and the bootstrap
DEFAULT_BOOTSTRAP = 1000  # resamples per interval
DEFAULT_FAMILY_CAP = 40  # by-family: most files any one family keeps (0: no cap)

# A model name with this suffix is the toolchain ablation of the model without it (`registry`).
NOSHARED_SUFFIX = "-noshared"
