"""Evaluation: benchmark metrics, scoring of submission files, the evaluate stage's logic, reports."""
