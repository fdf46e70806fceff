"""`runtrace scan`: verdicts, probabilities and explanations for PE files and run traces.

See docs/scan.md.  Modules: `inputs` (what to trace, what to read), `sequence` (a trace as the model
reads it), `onnxmodel` (the saved model's ONNX graphs, run by ONNX Runtime), `score`, `explain`
(occlusion), `calibration` (threshold and FPR), `schema` (the pydantic result document), `report` (its
parts), `scanner` (the pipeline), `render` (the terminal view), `synthetic` (traces and tiny models for
tests and benchmarks).
"""
