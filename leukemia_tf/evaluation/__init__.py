"""Evaluation: scoring, metrics, reports, prediction, patient-aware inference."""
