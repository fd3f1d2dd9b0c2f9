"""ragtune: fine-tune, retrieve, or both — measured."""

__version__ = "0.1.0"
