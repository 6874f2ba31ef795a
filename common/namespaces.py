"""Channel namespaces: who may subscribe to and publish on each kind of channel.

A channel is ``<namespace>:<id>`` (or the namespace's bare name, as ``feed``). Each
namespace says who may subscribe (:data:`SUBSCRIBE_RULES`), whether clients may
publish on it (and then its limits and how the moderation pipeline treats what they
publish), how much history it keeps for resume, and whether it reports live viewer
counts. The built-in channels are the :data:`BUILTIN` namespaces; a deployment adds
its own, or tunes the built-in ones, in a TOML file named by ``VYBE_NAMESPACES``,
read and validated once at start (an error names the file, the namespace and the key)::

    [namespaces.chat]
    subscribe = "claims"      # open | claims | owner | moderators
    publish = true
    moderation = "before"     # off | after | before
    history_len = 200
    history_ttl_s = 604800
    presence = true
    app = "miel"

Gateways, workers and the server API all read the same :class:`Namespaces`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import msgspec

from common.settings import SettingsError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


class Digest(NamedTuple):
    """A namespace's digest delivery, as the hub needs it (``Namespaces.digest_of``)."""

    event: str
    """The digest's event name (``feed.digest``)."""
    interval_s: float
    items: int
    """Newest items carried in full; ``count`` says how many arrived in all."""
    names: tuple[bytes, ...]
    """The coalesced events as they appear in an element (``"event":"vybe.created"``)."""

SubscribeRule = Literal["open", "claims", "owner", "moderators", "visible"]
SUBSCRIBE_RULES: dict[str, str] = {
    "open": "any authenticated user",
    "claims": "users whose token's `channels` claim lists the channel (or `<namespace>:*`)",
    "owner": "the user whose id is the channel's id, exactly (`<namespace>:<user id>`)",
    "moderators": "MODERATOR and ADMIN roles",
    "visible": "users who may see the vybe (built-in `vybe` namespace only)",
}
Moderation = Literal["off", "after", "before"]
MODERATION_MODES: dict[str, str] = {
    "off": "delivered at once, never scored",
    "after": "delivered at once, then scored: a flag opens a case, a hide takes it back (`publication.hidden`)",
    "before": "held until scored: delivered when the model approves, else held for a moderator",
}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_APP = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ID_PATTERN = r"[A-Za-z0-9_.@=+-][A-Za-z0-9_.:@=+-]{0,127}"
"""What a configured namespace's channel ids look like: 1-128 characters, no white space."""


class Namespace(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One namespace's rules. Unset limits follow the process settings (``VYBE_HISTORY_*``)."""

    name: str = ""
    subscribe: SubscribeRule = "open"
    publish: bool = False
    """Clients may ``publish`` on its channels (rate-, size-limited and moderated as below)."""
    moderation: Moderation = "after"
    """How client publications are moderated (:data:`MODERATION_MODES`)."""
    text_field: str = "text"
    """The field of a publication's ``data`` object that is scored (absent or not a string: nothing is)."""
    max_bytes: int = 4096
    """Largest publication ``data``, as JSON bytes."""
    max_chars: int = 2000
    """Longest ``text_field``, in code points."""
    rate_per_s: float = 2.0
    """Publications per second per connection on this namespace (bursts of ``rate_burst``)."""
    rate_burst: int = 10
    history_len: int | None = None
    history_ttl_s: int | None = None
    presence: bool = False
    """Report live viewer counts (``<namespace>.presence``: distinct users, all nodes)."""
    delivery: Literal["events", "digest"] = "events"
    """``events``: each event to each subscriber as it happens. ``digest``: the ``digest_events`` that
    arrive within ``digest_interval_s`` go to each socket as ONE ``<namespace>.digest`` (how many, the
    newest ``digest_items`` in full, the newest offset), so a socket's cost no longer grows with the
    post rate (docs/capacity.md); other events (take-downs, personal ones) still go out at once."""
    digest_interval_s: float = 1.0
    digest_items: int = 5
    digest_events: tuple[str, ...] = ("vybe.created", "publication")
    app: str | None = None
    """The app its publications' moderation cases belong to (shown and filtered in the console; its
    webhook hears the outcomes). None: the gateway's own app."""
    id_pattern: str = ID_PATTERN
    """Regular expression the part after ``<namespace>:`` must match ("" for a bare channel)."""
    builtin: bool = False

    @property
    def presence_event(self) -> str:
        return f"{self.name}.presence"


BUILTIN: dict[str, Namespace] = {ns.name: ns for ns in (
    Namespace(name="feed", subscribe="open", id_pattern="", builtin=True),
    Namespace(name="vybe", subscribe="visible", id_pattern=_UUID, builtin=True),
    Namespace(name="looproom", subscribe="open", id_pattern=_UUID, presence=True, builtin=True),
    Namespace(name="user", subscribe="owner", id_pattern=r"[^\s]{1,128}", builtin=True),
    Namespace(name="mod", subscribe="moderators", id_pattern="flagged", builtin=True),
)}
# The rules a deployment may not change on a built-in namespace: they guard members' own data.
_FIXED = ("subscribe", "id_pattern", "publish")
_FIXED_NAMES = ("vybe", "user", "mod")


class Namespaces:
    """Every namespace of this deployment: the built-in ones, as configured."""

    def __init__(self, configured: Iterable[Namespace] = (), *, history_len: int = 1000,
                 history_ttl_s: int = 172_800) -> None:
        table = dict(BUILTIN)
        for ns in configured:
            table[ns.name] = ns
        self.history_len, self.history_ttl_s = history_len, history_ttl_s
        self._table = table
        self._ids = {name: re.compile(f"^(?:{ns.id_pattern})$") for name, ns in table.items()}

    def __iter__(self) -> Iterator[Namespace]:
        return iter(self._table.values())

    def get(self, name: str) -> Namespace | None:
        return self._table.get(name)

    def of(self, channel: str) -> Namespace | None:
        """The namespace of ``channel``, or None when it is not a channel name here."""
        name, sep, rest = channel.partition(":")
        ns = self._table.get(name)
        if ns is None or (not sep and ns.id_pattern) or (sep and not ns.id_pattern):
            return None
        return ns if self._ids[name].match(rest) else None

    def history_of(self, channel: str) -> tuple[int, int]:
        """(events kept, seconds kept) for ``channel``'s history."""
        ns = self._table.get(channel.partition(":")[0])
        if ns is None:
            return self.history_len, self.history_ttl_s
        return (ns.history_len or self.history_len, ns.history_ttl_s or self.history_ttl_s)

    def digest_of(self, channel: str) -> Digest | None:
        """How ``channel``'s events are coalesced, when its namespace delivers digests."""
        ns = self._table.get(channel.partition(":")[0])
        if ns is None or ns.delivery != "digest":
            return None
        return Digest(f"{ns.name}.digest", ns.digest_interval_s, ns.digest_items,
                      tuple(f'"event":"{name}"'.encode() for name in ns.digest_events))

    def presence_channel(self, channel: str) -> Namespace | None:
        """The namespace when ``channel`` reports viewer counts, else None."""
        ns = self._table.get(channel.partition(":")[0])
        return ns if ns is not None and ns.presence else None

    def describe(self) -> str:
        """A line per namespace, for the channel error's message and the start log."""
        return ", ".join(n.name + (":{id}" if n.id_pattern else "") for n in self._table.values())


def load(path: str | None, *, history_len: int = 1000, history_ttl_s: int = 172_800) -> Namespaces:
    """The namespaces of ``VYBE_NAMESPACES`` (None: the built-in ones). Raises SettingsError."""
    if not path:
        return Namespaces(history_len=history_len, history_ttl_s=history_ttl_s)
    where = f"VYBE_NAMESPACES ({path})"
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise SettingsError("VYBE_NAMESPACES", f"cannot read {path}: {err.strerror or err}") from err
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(where, f"not valid TOML: {err}") from err
    unknown = set(raw) - {"namespaces"}
    if unknown:
        raise SettingsError(where, f"unknown top-level key(s) {sorted(unknown)}; expected [namespaces.<name>] tables")
    tables = raw.get("namespaces", {})
    if not isinstance(tables, dict):
        raise SettingsError(where, "`namespaces` must be a table of [namespaces.<name>] tables")
    return Namespaces([_parse(where, name, body) for name, body in tables.items()],
                      history_len=history_len, history_ttl_s=history_ttl_s)


def _parse(where: str, name: str, body: object) -> Namespace:
    at = f"{where} [namespaces.{name}]"
    if not _NAME.match(name):
        raise SettingsError(at, "a namespace name is 1-32 of a-z, 0-9, _ and -, starting with a letter")
    if not isinstance(body, dict):
        raise SettingsError(at, "must be a table")
    if "name" in body or "builtin" in body:
        raise SettingsError(at, "`name` and `builtin` are not settable")
    base = BUILTIN.get(name)
    if base is not None and name in _FIXED_NAMES:
        for key in _FIXED:
            if key in body and body[key] != getattr(base, key):
                raise SettingsError(at, f"`{key}` of the built-in namespace {name!r} is fixed "
                                        f"({getattr(base, key)!r}): it guards members' own data")
    fields = {**(msgspec.structs.asdict(base) if base is not None else {}), **body, "name": name}
    try:
        ns = msgspec.convert(fields, Namespace)
    except msgspec.ValidationError as err:
        raise SettingsError(at, str(err).replace("$.", "")) from err
    if ns.subscribe == "visible" and name != "vybe":
        raise SettingsError(at, "subscribe = \"visible\" is the built-in vybe namespace's rule; use "
                                f"one of {', '.join(r for r in SUBSCRIBE_RULES if r != 'visible')}")
    try:
        re.compile(ns.id_pattern)
    except re.error as err:
        raise SettingsError(at, f"`id_pattern` is not a regular expression: {err}") from err
    if ns.app is not None and not _APP.match(ns.app):
        raise SettingsError(at, "`app` is an app id: 1-40 of a-z, 0-9, _ and -")
    if ns.delivery == "digest" and not (0.05 <= ns.digest_interval_s <= 60 and 0 <= ns.digest_items <= 100):
        raise SettingsError(at, "a digest needs `digest_interval_s` of 0.05-60 and `digest_items` of 0-100")
    for key in ("max_bytes", "max_chars", "rate_burst"):
        if getattr(ns, key) <= 0:
            raise SettingsError(at, f"`{key}` must be positive")
    if ns.rate_per_s <= 0 or (ns.history_len is not None and ns.history_len <= 0) or (
            ns.history_ttl_s is not None and ns.history_ttl_s <= 0):
        raise SettingsError(at, "`rate_per_s`, `history_len` and `history_ttl_s` must be positive")
    if ns.publish and ns.subscribe == "moderators":
        raise SettingsError(at, "clients may not publish on a moderators-only namespace")
    return ns
