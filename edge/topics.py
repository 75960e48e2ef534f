"""The MQTT topic layout, in one place: ``{prefix}/{site}/{node}/{kind}``.

The publisher, the demo's viewer and anything on the surface build and read topic names only through
:class:`NodeTopics` and :func:`parse_topic`, so a layout change is made here. A node's outbox stores
each queued message with the topic it was addressed to when it was classified: after a layout change a
backlog still goes out on the old topics (a subscriber of the new layout misses it), so drain the outbox
(``backlog`` 0 in the health message) before changing the prefix, site or node of a gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_PREFIX = "stopewatch/v1"
Kind = Literal["status", "event", "waveform", "health"]
KINDS: tuple[Kind, ...] = ("status", "event", "waveform", "health")
# What the surface's collector publishes about a node (never a node itself): docs/surface.md.
ALERT = "alert"


@dataclass(frozen=True)
class NodeTopics:
    """The topics of one node."""

    prefix: str
    site: str
    node: str

    @property
    def root(self) -> str:
        """``{prefix}/{site}/{node}``."""
        return f"{self.prefix}/{self.site}/{self.node}"

    def topic(self, kind: Kind) -> str:
        return f"{self.root}/{kind}"

    @property
    def status(self) -> str:
        """Retained ``online`` / ``offline`` (the will) / ``stopped``."""
        return self.topic("status")

    @property
    def event(self) -> str:
        return self.topic("event")

    @property
    def waveform(self) -> str:
        return self.topic("waveform")

    @property
    def health(self) -> str:
        return self.topic("health")

    @property
    def alert(self) -> str:
        """Alerts the surface raises about this node (a seq gap, offline, silent, a restart)."""
        return f"{self.root}/{ALERT}"

    @property
    def all(self) -> str:
        """A subscription to every topic of this node."""
        return f"{self.root}/#"


def subscription(prefix: str = DEFAULT_PREFIX, kind: Kind | None = None) -> str:
    """A subscription to every node under ``prefix`` (of one ``kind``, or all)."""
    return f"{prefix}/+/+/{kind}" if kind else f"{prefix}/#"


def alert_subscription(prefix: str = DEFAULT_PREFIX) -> str:
    """A subscription to the surface's alerts about every node under ``prefix``."""
    return f"{prefix}/+/+/{ALERT}"


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str, Kind] | None:
    """(site, node, kind) of a topic of this layout, else None."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1:].split("/")
    if len(parts) != 3 or parts[2] not in KINDS or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1], parts[2]  # type: ignore[return-value]
