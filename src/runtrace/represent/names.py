"""The names of the representations and of the window modes, defined once and importing nothing: the
command line builds its option choices from them at start-up, where loading numpy (as `encode` and
`windows` do) would cost about 0.2 s of every `runtrace --help` (measured)."""

ISM = "ism"
BSM = "bsm"
REPRESENTATIONS = (ISM, BSM)

WINDOW_MODES = ("sliding", "first-n", "sampled")  # see `runtrace.represent.windows`
