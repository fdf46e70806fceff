"""`python -m runtrace`: the command line, for callers that hold an interpreter but no script on PATH
(the service starts its scans this way)."""

from runtrace.cli import main

main()
