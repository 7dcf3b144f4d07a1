"""trigger-mesh: triggers become logged activations that every in-range camera confirms."""

__version__ = "0.1.0"
