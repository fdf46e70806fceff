"""The paper's figures (docs/paper.md) that every report sets runtrace's beside: accuracy and false-positive
rate of its LSTMs, per representation, as fractions (the paper does not say how it split its data)."""

PAPER = {"ism": (0.8751, 0.1834), "bsm": (0.9926, 0.0262)}
