"""The names a model's settings take, defined once and importing nothing heavy: `spec` (the checkpoint
format) and the estimators check against them, and the command line builds its option choices from them
at start-up, where loading numpy (as `spec` does) would cost about 0.2 s of every `runtrace --help`
(measured)."""

from runtrace.represent.names import BSM, ISM

# sequence model kind -> the representation it reads; the first of each representation is its default
KINDS = {"ism-lstm": ISM, "bsm-lstm": BSM, "bsm-transformer": BSM}
# Models of n-gram counts (`runtrace.models.ngram`): they read either representation, the training
# dataset's (`config.json` records which).
NGRAM_KINDS = ("ngram-lgbm", "ngram-lgbm-monotone")
AGGREGATIONS = ("mean", "max", "attention")  # window outputs -> file score
POOLINGS = ("last", "mean", "max")  # LSTM outputs of a window -> its features
TRANSFORMER_POOLINGS = ("mean", "max")  # a transformer's outputs have no "last" that saw the window
BLOCK_ENCODERS = ("mean", "max", "conv")  # BSM: a block's instructions -> its vector
VAL_BY = ("file", "group")  # early stopping's validation files drawn by file or by origin group
MAX_BLOCK_TOKENS = 32  # BSM: longer blocks keep their head and last instruction (`spec.block_rows`)
# Toolchain ablation (`shared_code`): a code block is shared when at least this share of the training
# files of each class executes it.
DEFAULT_MIN_SHARE = 0.5
