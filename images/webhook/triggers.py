"""What may trigger a redeploy: the listener's config, payload parsing and the allowlist. Pure: no Docker, no HTTP.

Every parser raises only `PayloadError`, whatever bytes arrive.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dockyard.contract import PUSHED_TAG_PREFIX

# Docker's own grammar (distribution/reference): a tag, and a repository path of lowercase components.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# A reference to pull, optionally prefixed by a registry host[:port].
PULL_NAME = re.compile(rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{REPOSITORY.pattern}")
CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # Docker's own rule, bounded
HOST_PORT = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}")
MAX_NAME = 255
MAX_URL = 2048
MAX_EVENTS = 100
REGISTRY_MEDIA_TYPES = frozenset({
    "application/json",
    "application/vnd.docker.distribution.events.v1+json",  # distribution 2.x
    "application/vnd.docker.distribution.events.v2+json",  # distribution 3.x
})


class PayloadError(ValueError):
    """A request body that is not what its sender promised; str(e) says what is wrong."""


class ConfigError(ValueError):
    """The listener's config file is unusable; str(e) names the key."""


@dataclass(frozen=True)
class Trigger:
    """A push that may redeploy the app."""

    source: str  # hub | registry
    repository: str
    tag: str
    callback_url: str | None = None  # Docker Hub's, told the outcome
    request_id: str = ""  # the HTTP request it came in, for logs and the audit trail


@dataclass(frozen=True)
class Swarm:
    """On a swarm (`cluster: swarm`) a redeploy updates the app's service, whose nodes pull from the registry's TLS
    twin."""

    service: str
    registry: str  # host:port of the twin, as every node reaches it


@dataclass(frozen=True)
class Config:
    hub_token: str
    registry_token: str
    registry: str  # host:port of the private registry as the host's dockerd sees it
    app_repository: str
    tags: tuple[str, ...]
    hub_repository: str | None
    hub_pull: str | None
    health_timeout: float
    proxy: str  # the proxy's container, where a switch reloads Caddy
    swarm: Swarm | None = None

    def image_for(self, trigger: Trigger) -> str:
        """The reference the host pulls for a trigger; on a swarm, every node."""
        if trigger.source == "registry":
            registry = self.swarm.registry if self.swarm else self.registry
            return f"{registry}/{self.app_repository}:{trigger.tag}"
        return f"{self.hub_pull}:{trigger.tag}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.hub_token, self.registry_token


def load_config(path: Path) -> Config:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a JSON object")

    def need(key: str, kind: type | tuple[type, ...], optional: bool = False):
        value = data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{path}: {key} missing or of the wrong type")
        return value

    for key in ("hub_token", "registry_token"):
        if len(need(key, str)) < 16:
            raise ConfigError(f"{path}: {key} shorter than 16 characters; deploy generates one")
    tags = need("tags", list)
    if not tags or not all(isinstance(t, str) and t for t in tags):
        raise ConfigError(f"{path}: tags must be a non-empty list of fnmatch patterns")
    hub_repository = need("hub_repository", str, optional=True)
    hub_pull = need("hub_pull", str, optional=True) or hub_repository
    for key, value, grammar in (
        ("app_repository", need("app_repository", str), REPOSITORY),
        ("hub_repository", hub_repository, REPOSITORY),
        ("hub_pull", hub_pull, PULL_NAME),
    ):
        if value is not None and not (len(value) <= MAX_NAME and grammar.fullmatch(value)):
            raise ConfigError(f"{path}: {key} {value!r} is not a repository name")
    if not HOST_PORT.fullmatch(need("registry", str)):
        raise ConfigError(f"{path}: registry must be host:port")
    swarm = _swarm(need("swarm", dict, optional=True), path)
    if need("health_timeout", (int, float)) <= 0:
        raise ConfigError(f"{path}: health_timeout must be positive seconds")
    if not CONTAINER_NAME.fullmatch(need("proxy", str)):
        raise ConfigError(f"{path}: proxy {data['proxy']!r} is not a container name")
    return Config(
        hub_token=data["hub_token"], registry_token=data["registry_token"], registry=data["registry"],
        app_repository=data["app_repository"], tags=tuple(tags), hub_repository=hub_repository,
        hub_pull=hub_pull, health_timeout=float(data["health_timeout"]), proxy=data["proxy"], swarm=swarm,
    )


def _swarm(value: dict | None, path: Path) -> Swarm | None:
    if value is None:
        return None
    service, registry = value.get("service"), value.get("registry")
    if not (isinstance(service, str) and CONTAINER_NAME.fullmatch(service)):
        raise ConfigError(f"{path}: swarm.service {service!r} is not a service name")
    if not (isinstance(registry, str) and HOST_PORT.fullmatch(registry)):
        raise ConfigError(f"{path}: swarm.registry must be host:port")
    return Swarm(service, registry)


def parse_hub_payload(body: bytes) -> Trigger:
    """A Docker Hub webhook: `push_data.tag`, `repository.repo_name`/`namespace`, optional `callback_url`."""
    payload = _json_object(body)
    push_data = _member(payload, "push_data", dict)
    repository = _member(payload, "repository", dict)
    tag = _tag(_member(push_data, "tag", str, "push_data"), "push_data.tag")
    repo_name = _repository(_member(repository, "repo_name", str, "repository"), "repository.repo_name")
    namespace = _member(repository, "namespace", str, "repository")
    if repo_name.partition("/")[0] != namespace:
        raise PayloadError("repository.repo_name is not in repository.namespace")
    callback_url = payload.get("callback_url")
    if callback_url is not None:
        callback_url = _callback_url(callback_url)
    return Trigger("hub", repo_name, tag, callback_url)


def parse_registry_envelope(body: bytes) -> list[Trigger]:
    """The tagged manifest pushes of a registry notification envelope, in order; other events are dropped."""
    events = _member(_json_object(body), "events", list)
    if len(events) > MAX_EVENTS:
        raise PayloadError(f"more than {MAX_EVENTS} events")
    triggers = []
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            raise PayloadError(f"{where} is not an object")
        if _member(event, "action", str, where) != "push":
            continue
        target = _member(event, "target", dict, where)
        repository = _repository(_member(target, "repository", str, f"{where}.target"), f"{where}.target.repository")
        tag = target.get("tag")
        if tag is None or tag == "":  # a blob, or a manifest pushed by digest
            continue
        if not isinstance(tag, str):
            raise PayloadError(f"{where}.target.tag is not a string")
        triggers.append(Trigger("registry", repository, _tag(tag, f"{where}.target.tag")))
    return triggers


def refusal(trigger: Trigger, config: Config) -> str | None:
    """Why `trigger` may not redeploy the app, or None when it may."""
    wanted = config.app_repository if trigger.source == "registry" else config.hub_repository
    if wanted is None:
        return "no hub_repository is configured"
    if trigger.repository != wanted:
        return f"repository {trigger.repository} is not {wanted}"
    if trigger.tag.startswith(PUSHED_TAG_PREFIX):
        return f"tag {trigger.tag} is dockyard deploy's own push"
    if not any(fnmatch.fnmatchcase(trigger.tag, pattern) for pattern in config.tags):
        return f"tag {trigger.tag} matches none of {list(config.tags)}"
    return None


def _json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise PayloadError("JSON nested too deeply") from None
    except ValueError as e:  # bad UTF-8, bad JSON, NaN, duplicate keys, integers too long to convert
        raise PayloadError(f"not valid JSON: {str(e)[:120]}") from None
    if not isinstance(payload, dict):
        raise PayloadError("JSON body is not an object")
    return payload


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


_KIND_NAMES = {dict: "an object", list: "a list", str: "a string"}


def _member(obj: dict, key: str, kind: type, where: str = ""):
    value = obj.get(key)
    if not isinstance(value, kind):
        name = f"{where}.{key}" if where else key
        raise PayloadError(f"{name} missing or not {_KIND_NAMES[kind]}")
    return value


def _tag(value: str, where: str) -> str:
    if not TAG.fullmatch(value):
        raise PayloadError(f"{where} is not a Docker tag")
    return value


def _repository(value: str, where: str) -> str:
    if len(value) > MAX_NAME or not REPOSITORY.fullmatch(value):
        raise PayloadError(f"{where} is not a repository name")
    return value


def _callback_url(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(rf"[!-~]{{1,{MAX_URL}}}", value):  # printable ASCII, no space
        raise PayloadError("callback_url is not a URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise PayloadError("callback_url is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PayloadError("callback_url must be an http or https URL")
    return value
