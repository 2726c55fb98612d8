"""LLM judges outside the training data path, and the one rule every judge asks by (ask.py: format, parse, retry)."""
