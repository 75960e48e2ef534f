"""Fault injection into the real daemon process, for tests/test_faults_link.py.

The tests start ``python -m edge.cli run`` with this directory first on PYTHONPATH and
``STOPEWATCH_TEST_FAULT=<worker>:<trigger file>``; Python imports this module at start-up. Once the trigger
file exists, the named worker thread raises :class:`InjectedFault` at its next step: ``serial`` (the
reader, in its chunk loop), ``sender`` (the MQTT sender, when it next handles PUBACKs) or ``network``
(paho's network loop). Nothing is changed without the variable; the code under test is not touched.
"""

from __future__ import annotations

import os
import sys
import threading


class InjectedFault(RuntimeError):
    """The fault a test asked for."""


def _install(worker: str, trigger: str) -> None:
    def armed() -> bool:
        return os.path.exists(trigger)

    if worker == "serial":
        from firmware_bridge import reader

        chunks = reader.SerialReader.chunks

        def faulty_chunks(self):
            for data in chunks(self):
                if armed():
                    raise InjectedFault("injected fault in the serial reader")
                yield data

        reader.SerialReader.chunks = faulty_chunks
    elif worker == "sender":
        from edge.gateway import mqtt

        acknowledge = mqtt.Publisher._acknowledge

        def faulty_acknowledge(self, acked):
            if armed():
                raise InjectedFault("injected fault in the MQTT sender")
            return acknowledge(self, acked)

        mqtt.Publisher._acknowledge = faulty_acknowledge
    elif worker == "network":
        import paho.mqtt.client as paho

        loop = paho.Client._loop

        def faulty_loop(self, *args, **kwargs):
            if armed() and threading.current_thread() is getattr(self, "_thread", None):
                raise InjectedFault("injected fault in the MQTT network loop")
            return loop(self, *args, **kwargs)

        paho.Client._loop = faulty_loop
    else:
        raise ValueError(f"STOPEWATCH_TEST_FAULT: unknown worker {worker!r}")
    print(f"fault hook armed: {worker} (trigger {trigger})", file=sys.stderr, flush=True)


_spec = os.environ.get("STOPEWATCH_TEST_FAULT")
if _spec:
    _install(*_spec.split(":", 1))
