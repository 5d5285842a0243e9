"""Feature computations: semantic basis, LTE, recent items."""
