"""Where hosts come from: one Provider per `provider:` value of the inventory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dockyard.environment import Env
    from dockyard.state import HostRecord


class Provider(Protocol):
    def provision(self, yes: bool = False) -> list[HostRecord]:
        """Create the environment's hosts or start them, until SSH lets dockyard in; record them in state.
        `yes` answers the question before anything is destroyed."""

    def hosts(self) -> list[HostRecord]:
        """The hosts as they can be reached now; changes nothing."""

    def teardown(self, yes: bool = False) -> None:
        """Remove everything the provider made for the environment; works when part of it is already gone."""


def provider_for(env: Env) -> Provider:
    # Imported on demand: a sandbox run never loads boto3, an AWS run never the Docker SDK for hosts.
    match env.inventory.provider:
        case "sandbox":
            from dockyard.providers.sandbox import Sandbox

            return Sandbox(env)
        case "aws":
            from dockyard.providers.aws.provider import Aws

            return Aws(env)
        case "static":
            from dockyard.providers.static import Static

            return Static(env)
    raise AssertionError(f"inventory validation lets no provider {env.inventory.provider!r} through")
