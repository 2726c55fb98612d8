"""Evaluation on the ED test split: replies from a model, the papers' metrics, the EPITOME level classifiers."""
