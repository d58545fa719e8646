"""synthllm: synthetic math data from a pre-training corpus, and its scaling laws."""

__version__ = "0.1.0"
