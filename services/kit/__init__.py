"""The shared service kit: app factory, settings, metrics, errors, auth, feature client."""
