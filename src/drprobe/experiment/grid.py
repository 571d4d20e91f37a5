"""Defaults of an experiment's grid that the CLI shows too (so this module imports nothing)."""

#: The seeds of the seeded selectors when none are given (the paper uses 1-5).
DEFAULT_SEEDS: tuple[int, ...] = (1, 2, 3)
