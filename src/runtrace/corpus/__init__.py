"""The labelled corpus: sources in, content-addressed samples and a Parquet manifest out.

Samples are only ever read and parsed here (and emulated by the tracer later); nothing in this package
runs a sample.
"""
