"""Registry errors. Each one carries a message a user can act on; the CLI prints it and exits 2."""

from __future__ import annotations


class RegistryError(Exception):
    """Base class for model registry errors."""


class RegistrationError(RegistryError, ValueError):
    """A model version was refused at registration; nothing was stored."""


class ModelNotFound(RegistryError, LookupError):
    """An unknown model name, version or alias. A LookupError so services can map it to 404."""


class AliasError(RegistryError, ValueError):
    """A bad alias name, or an alias operation that cannot be done (e.g. deleting one that is not set)."""


class ArtifactTampered(RegistryError):
    """A stored artifact no longer matches the hashes in its manifest."""

    def __init__(self, ref: str, problems: list[str]) -> None:
        self.ref, self.problems = ref, problems
        super().__init__(f"artifact of {ref} does not match its manifest: " + "; ".join(problems))
