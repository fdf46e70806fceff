"""What a scan shows unless told otherwise, written once.  This module imports nothing, so `runtrace
scan` builds its options from it without loading the scanner (numpy, ONNX Runtime); the scanner and the
service read the same values."""

DEFAULT_EXPLAIN = 5  # explanation rows per direction (towards malicious, towards benign); 0: none
