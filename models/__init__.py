"""Model registry and recommender families (sequential, basket, ctr, ...)."""
