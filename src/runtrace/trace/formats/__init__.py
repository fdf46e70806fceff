"""Trace file formats: one module per format; `registry` detects a file by its content and reads it."""
