"""ISM and BSM: instruction normalisation, token/block sequences, vocabularies, windows."""

from runtrace.represent.dataset import DatasetError, SequenceDataset, build_dataset
from runtrace.represent.encode import BSM, ISM, REPRESENTATIONS, encode_trace
from runtrace.represent.normalise import Normalisation, api_token, normalise_instruction, normalise_text
from runtrace.represent.vocabulary import Vocabulary
from runtrace.represent.windows import WindowConfig, Windows, cut_windows, window_starts

__all__ = [
    "BSM",
    "ISM",
    "REPRESENTATIONS",
    "DatasetError",
    "Normalisation",
    "SequenceDataset",
    "Vocabulary",
    "WindowConfig",
    "Windows",
    "api_token",
    "build_dataset",
    "cut_windows",
    "encode_trace",
    "normalise_instruction",
    "normalise_text",
    "window_starts",
]
