"""Versioned feature store: canonical data, semantic basis, LTE features, Feast repo, online readers.

Import-light on purpose: the serving path imports `feature_store.online` only, which must never
pull in Feast (``import feast`` costs 7-11 s on a 2-core machine).
"""
