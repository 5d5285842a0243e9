"""Canonical data format, dataset adapters and the synthetic generator."""
