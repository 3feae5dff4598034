"""Evaluation: the metrics, drift and the bootstrap (``evaluate``), and the champion gate
(``champion``)."""
