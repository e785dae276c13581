"""One exception type per class of failure an operator can act on."""


class DockyardError(Exception):
    """str(e) is the one line the operator sees: what, where, and how to fix it."""


class InventoryError(DockyardError):
    """Bad or missing inventory data."""


class ProviderError(DockyardError):
    """No host could be provided (sandbox engine, EC2, static server)."""


class ConnectError(DockyardError):
    """SSH unreachable, refused, or the host key does not match."""


class RemoteFailed(DockyardError):
    """A command run on a host exited non-zero; raised by the connection, where it happens.

    `what` says what ran in the operator's words; the runner narrows it to the step that failed.
    """

    def __init__(self, where: str, what: str, exited: int, stdout: str, stderr: str):
        super().__init__(where, what, exited)
        self.where, self.what, self.exited, self.stdout, self.stderr = where, what, exited, stdout, stderr

    def last_lines(self, n: int = 3) -> list[str]:
        """The last lines it printed, stderr first: where a shell script says why it stopped."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-n:]
        return []

    def __str__(self) -> str:
        said = " | ".join(self.last_lines()) or "no output"
        return f"{self.where}: {self.what} failed (exit {self.exited}): {said}"


class StepFailed(DockyardError):
    """A remote step ran but did not reach its goal (a release that did not serve, a summary missing)."""


class FactsError(DockyardError):
    """A host's facts output cannot be read."""


class ImageError(DockyardError):
    """An image could not be built, found or transferred."""


class RegistryError(DockyardError):
    """The registry API refused or could not be reached."""


class Aborted(DockyardError):
    """The operator declined a confirmation."""


class SecretError(DockyardError):
    """One of the app's secrets could not be read from its source."""
