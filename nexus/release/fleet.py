"""`nexus status` over a fleet: for each Triton server, READY or not, what it serves, which release that is,
and drift against `.nexus_meta.json`; and whether the servers agree on one release.

Triton does not say which repository prefix it reads, so a server's release is found by content: the
releases under the root whose models and versions are exactly the ones the server has READY, then,
of those, the newest whose `config.pbtxt` Triton loaded as the release renders it (:mod:`.served`).
None matching is a hand-published or unknown repository.

Which models a server has comes from its repository index when the admin key opens it (`$NEXUS_API_KEY`
or `.nexus/api_key`, as for `nexus serve`), else by asking for each model that is stored or released
(a restricted server's other models are then not seen).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nexus.errors import ServerAddressError, ServerListError, TritonError, TritonUnreachableError
from nexus.registry import Project
from nexus.release.listing import list_releases, open_root
from nexus.release.manifest import Release
from nexus.release.served import ConfigMatcher
from nexus.serving.admin import TritonAdmin
from nexus.serving.discovery import existing_api_key
from nexus.serving.endpoints import http_url

#: Seconds per admin request: a server that does not answer is a row, and should not hold up the others.
TIMEOUT = 5.0


@dataclass(frozen=True)
class ServerStatus:
    """One server of the fleet."""

    #: Its URL, `http://host:port`.
    server: str
    reachable: bool
    #: `/v2/health/ready` answered 200 (with `--strict-readiness`: every model loaded).
    ready: bool
    #: The READY versions of each model it has (models with none left out).
    models: dict[str, list[int]] = field(default_factory=dict)
    #: The release it serves; None: no release matches (hand-published or unknown), or unreachable.
    release: str | None = None
    #: Releases whose models and versions equal what it serves, newest first (``release`` is one of them
    #: when its configs match too).
    candidates: list[str] = field(default_factory=list)
    #: Against `.nexus_meta.json`, in words, one per model.
    drift: list[str] = field(default_factory=list)
    #: Why it could not be reached.
    error: str | None = None
    #: "index" (Triton's repository index) or "probe" (asked model by model: the index is restricted).
    found_by: str | None = None


@dataclass(frozen=True)
class FleetStatus:
    #: The releases root compared with.
    root: str
    servers: list[ServerStatus]
    #: The latest version of each model in `.nexus_meta.json`.
    latest: dict[str, int]

    @property
    def by_release(self) -> dict[str | None, list[str]]:
        """Reachable servers by the release they serve (None: none), in the order given."""
        grouped: dict[str | None, list[str]] = {}
        for s in self.servers:
            if s.reachable:
                grouped.setdefault(s.release, []).append(s.server)
        return grouped

    @property
    def agreed(self) -> str | None:
        """The one release every server serves; None when one is unreachable, serves none, or they differ."""
        releases = {s.release if s.reachable else None for s in self.servers}
        return next(iter(releases)) if len(releases) == 1 else None


def read_server_list(path: Path | str) -> list[str]:
    """The addresses in a `--servers` file (one a line, `#` comments, blank lines skipped), as URLs, each once.

    Raises:
        ServerListError: the file cannot be read, holds no address, or a line is not an address.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServerListError(str(path), "no such file") from None
    except UnicodeDecodeError:
        raise ServerListError(str(path), "is not UTF-8 text") from None
    except OSError as e:
        raise ServerListError(str(path), f"cannot be read ({e.strerror or e})") from None
    urls: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        address = line.split("#", 1)[0].strip()
        if not address:
            continue
        try:
            url = http_url(address)
        except ServerAddressError:
            raise ServerListError(str(path), f"line {number}, {address!r}, is not a Triton address") from None
        if url not in urls:
            urls.append(url)
    if not urls:
        raise ServerListError(str(path), "it lists no server")
    return urls


def fleet_status(project: Project, servers: list[str], root: str | None = None) -> FleetStatus:
    """The status of each of ``servers`` (`host:port` or URLs), compared with the releases under ``root``
    (default `[release] root` in `.nexusrc`) and with `.nexus_meta.json`.

    An unreachable server is a row (``reachable`` False), never an error.

    Raises:
        ServerAddressError: an address that is not one.
    """
    urls = list(dict.fromkeys(http_url(s) for s in servers))
    where = open_root(project, root)
    releases = list_releases(project, root).complete
    latest = {name: record.current().version for name, record in project.read_metadata().models.items()}
    known = set(latest) | {m.name for r in releases for m in r.models}
    key = existing_api_key(project)
    matcher = ConfigMatcher(where)

    def one(url: str) -> ServerStatus:
        return _server_status(TritonAdmin(url, key=key, timeout=TIMEOUT), known, releases, matcher, latest)

    with ThreadPoolExecutor(max_workers=min(8, len(urls)) or 1) as pool:
        rows = list(pool.map(one, urls))
    return FleetStatus(where.uri, rows, dict(sorted(latest.items())))


def _server_status(
    admin: TritonAdmin, known: set[str], releases: list[Release], matcher: ConfigMatcher, latest: dict[str, int]
) -> ServerStatus:
    try:
        admin.is_live()
        ready = admin.is_ready()
        names, found_by = set(known), "probe"
        try:
            names |= {entry.name for entry in admin.index()}
            found_by = "index"
        except TritonUnreachableError:
            raise
        except TritonError:
            pass  # restricted without the key: the stored and released models are asked for one by one
        models = {name: versions for name in sorted(names) if (versions := admin.ready_versions(name))}
        candidates = [r for r in reversed(releases) if {m.name: [m.version] for m in r.models} == models]
        release = next((r.id for r in candidates if not matcher.differences(admin, r)), None)
    except TritonUnreachableError as e:
        return ServerStatus(admin.url, reachable=False, ready=False, error=e.detail)
    return ServerStatus(
        admin.url,
        reachable=True,
        ready=ready,
        models=models,
        release=release,
        candidates=[r.id for r in candidates],
        drift=_drift(models, latest),
        found_by=found_by,
    )


def _drift(models: dict[str, list[int]], latest: dict[str, int]) -> list[str]:
    """A served version that is not the latest, a model stored but not served, one served but not stored."""
    found = []
    for name in sorted(set(models) | set(latest)):
        served = ", ".join(f"v{v}" for v in models.get(name, []))
        if name not in models:
            found.append(f"{name}: stored (latest v{latest[name]}) but not served")
        elif name not in latest:
            found.append(f"{name}: serves {served}, but the model is not stored in .nexus_meta.json")
        elif models[name] != [latest[name]]:
            found.append(f"{name}: serves {served}, .nexus_meta.json says v{latest[name]}")
    return found
