"""Metrics at natural prevalence, patient-bootstrap intervals and paired comparisons between models."""
