"""selfexpress: scalable, inductive subspace clustering with learned self-expression."""

__version__ = "0.1.0"
