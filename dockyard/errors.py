"""One exception type per class of failure an operator can act on."""


class DockyardError(Exception):
    """str(e) is the one line the operator sees: what, where, and how to fix it."""


class InventoryError(DockyardError):
    """Bad or missing inventory data."""


class ProviderError(DockyardError):
    """No host could be provided (sandbox engine, EC2, static server)."""


class ConnectError(DockyardError):
    """SSH unreachable, refused, or the host key does not match."""


class StepFailed(DockyardError):
    """A remote step exited non-zero."""


class ImageError(DockyardError):
    """An image could not be built, found or transferred."""


class RegistryError(DockyardError):
    """The registry API refused or could not be reached."""


class Aborted(DockyardError):
    """The operator declined a confirmation."""


class SecretError(DockyardError):
    """One of the app's secrets could not be read from its source."""
