"""Online reads of pinned feature versions. Never imports Feast (see valueproto.py)."""

from feature_store.online.base import FeatureNotOnline, FeatureRows, OnlineReader
from feature_store.online.client import FeatureClient, make_client, make_reader

__all__ = ["FeatureClient", "FeatureNotOnline", "FeatureRows", "OnlineReader", "make_client", "make_reader"]
