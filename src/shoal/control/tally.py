"""Counts of each pool's container starts and stops, kept from the event bus.

``stats()`` reads its counters from here (``containers_started``, and
``containers_stopped`` by reason) and its gauges (queued, running, containers)
from the pool's own state, which is what the pool dispatches by. The tally hears
only container events, which come a few per container's life, so it adds nothing
to an input's path.
"""

from __future__ import annotations

from collections import Counter

from shoal.control.events import EventBus
from shoal.spec.events import ContainerStarting, ContainerStopped


class ContainerTally:
    """How many containers each pool (by key) started, and stopped for each reason."""

    def __init__(self, events: EventBus) -> None:
        self._started: Counter[str] = Counter()
        self._stopped: dict[str, Counter[str]] = {}
        events.subscribe(self._hear, ContainerStarting, ContainerStopped)

    def _hear(self, event: ContainerStarting | ContainerStopped) -> None:
        if isinstance(event, ContainerStarting):
            self._started[event.function] += 1
        else:
            self._stopped.setdefault(event.function, Counter())[event.reason] += 1

    def started(self, function: str) -> int:
        """Containers ``function``'s pool asked for so far."""
        return self._started[function]

    def stopped(self, function: str) -> dict[str, int]:
        """Containers of ``function``'s pool gone so far, by reason."""
        return dict(self._stopped.get(function, {}))

    def forget(self, function: str) -> None:
        """Drop ``function``'s counts (its pool was removed)."""
        self._started.pop(function, None)
        self._stopped.pop(function, None)
