"""raypipe: curate long chain-of-thought data on Ray, train on it, and evaluate the result."""

__version__ = "0.1.0"
