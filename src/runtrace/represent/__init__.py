"""ISM and BSM: instruction normalisation, token/block sequences, vocabularies, windows.

Modules: `normalise`, `encode` (a trace as tokens or blocks), `vocabulary`, `windows`, `dataset`
(Parquet datasets for training), `labelled` (which traces a dataset is built from), `synthetic`.
Import from the modules themselves: this package re-exports nothing, so that `runtrace scan`, which
needs `encode` but not `dataset`, does not pay for pyarrow at start-up.
"""
