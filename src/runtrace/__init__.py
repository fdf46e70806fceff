"""runtrace: malicious-code detection from run traces with LSTM networks."""

__version__ = "0.1.0"
