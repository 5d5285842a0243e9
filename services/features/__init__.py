"""Feature read API: pinned feature versions over HTTP (the demo's service until models exist)."""
