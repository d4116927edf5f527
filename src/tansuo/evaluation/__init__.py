"""Evaluation: leak-free protocols, full-ranking metrics, off-policy estimators."""
