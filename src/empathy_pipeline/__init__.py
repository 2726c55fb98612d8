"""empathy-pipeline: Synth-Empathy and Efficient-Empathy as a reproducible DVC pipeline."""

__version__ = "0.1.0"
