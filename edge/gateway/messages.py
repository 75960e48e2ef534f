"""Event messages (schema ``stopewatch.event/1``): identity, sequence and model added to a pipeline event."""

from __future__ import annotations

import uuid

SCHEMA = "stopewatch.event/1"


def new_boot_id() -> str:
    """A fresh id for this run of the daemon (events carry it with a per-boot sequence number)."""
    return uuid.uuid4().hex[:16]


class EventMessenger:
    """Numbers events of one boot and turns pipeline events into SPEC.md event messages.

    ``event_id`` is ``{site}.{node}.{boot_id}.{seq}``: unique, and stable across redelivery because
    it is written into the stored message once, before the first attempt to publish it.
    """

    def __init__(self, site: str, node: str, boot_id: str, model: dict):
        self.site, self.node, self.boot_id, self.model = site, node, boot_id, dict(model)
        self.seq = 0

    def message(self, event: dict) -> dict:
        """The message for one pipeline event (its ``_`` keys are left out)."""
        self.seq += 1
        body = {k: v for k, v in event.items() if not k.startswith("_")}
        return {
            "schema": SCHEMA,
            "event_id": f"{self.site}.{self.node}.{self.boot_id}.{self.seq}",
            "site": self.site,
            "node": self.node,
            "boot_id": self.boot_id,
            "seq": self.seq,
            **body,
            "model": self.model,
            "historical": False,
        }
