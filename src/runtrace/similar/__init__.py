"""Nearest known programs by executed code: MinHash signatures of what a trace ran, and an index of them."""
