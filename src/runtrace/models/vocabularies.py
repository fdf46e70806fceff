"""Fitting an LSTM's vocabularies on the tokens of its training windows only."""

from __future__ import annotations

import numpy as np

from runtrace.models.batching import DatasetTables
from runtrace.models.hyperparameters import VocabularyConfig
from runtrace.represent.encode import ISM, expand
from runtrace.represent.vocabulary import Vocabulary


def _fit(lexicon, docs, config: VocabularyConfig) -> Vocabulary:
    return Vocabulary.fit(
        lexicon,
        docs,
        min_count=config.min_count,
        min_documents=config.min_documents,
        max_size=config.max_size,
    )


def fit_vocabularies(
    tables: DatasetTables,
    docs: list[np.ndarray],
    instructions: VocabularyConfig,
    blocks: VocabularyConfig,
    block_ids: bool,
) -> tuple[Vocabulary, Vocabulary | None]:
    """(instruction vocabulary, block-key vocabulary or None) from the training windows' documents.

    ISM documents are instruction tokens.  BSM documents are block keys: the block vocabulary (only
    with block_ids, the learned block-identity embedding) counts them, the instruction vocabulary
    counts the instructions of every executed block."""
    if tables.representation == ISM:
        return _fit(tables.lexicon, docs, instructions), None
    block_vocab = _fit(tables.lexicon, docs, blocks) if block_ids else None
    insn_docs = []
    for doc in docs:
        keys, counts = np.unique(doc, return_counts=True)
        insn_docs.append(expand(tables.block_flat, tables.block_offsets, np.repeat(keys, counts)))
    return _fit(tables.instruction_lexicon, insn_docs, instructions), block_vocab
