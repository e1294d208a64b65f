"""The control plane's event bus: pools and containers publish, anyone subscribes.

Events are the typed values of :mod:`shoal.spec.events`. Subscribers are plain
functions, called at once, in the order they subscribed, on the control plane's
loop, by the code that publishes: they must be quick, and hand anything slow
(writing to disk, a network) to a task or a thread of their own. A subscriber that
raises is unsubscribed, with its traceback on stderr: a broken metrics exporter
must not break dispatch.

Costing nothing when nobody listens. Each event type has a :class:`Channel`, a
list of its subscribers, which a publisher looks up once (:meth:`EventBus.channel`)
and keeps. It builds an event only behind ``if channel:``, a list's own truth test
(no Python call), so an event type nobody subscribed to costs one branch where it
would be published.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from shoal import log
from shoal.spec.events import EVENT_TYPES

E = TypeVar("E")

#: Hears one event.
Subscriber = Callable[[Any], None]


class Channel(list[Callable[[E], None]], Generic[E]):
    """The subscribers of one event type (true while it has any)."""

    def publish(self, event: E) -> None:
        """Hand ``event`` to each subscriber; one that raises is dropped."""
        for subscriber in tuple(self):  # one may (un)subscribe meanwhile, from any thread
            try:
                subscriber(event)
            except Exception:  # a subscriber's bug must not stop the pool
                self._drop(subscriber, event)

    def _drop(self, subscriber: Callable[[E], None], event: E) -> None:
        if subscriber in self:
            self.remove(subscriber)
        log.say(
            f"shoal: event subscriber {subscriber!r} raised on {type(event).__name__} "
            f"and was unsubscribed:\n{traceback.format_exc()}",
            component="events",
            level="error",
        )


class EventBus:
    """One channel per event type of :mod:`shoal.spec.events`."""

    def __init__(self) -> None:
        self._channels: dict[type[Any], Channel[Any]] = {kind: Channel() for kind in EVENT_TYPES}

    def channel(self, kind: type[E]) -> Channel[E]:
        """The channel of ``kind``, to keep and publish on.

        Raises:
            KeyError: ``kind`` is not an event type.
        """
        return self._channels[kind]

    def subscribe(self, subscriber: Subscriber, *kinds: type[Any]) -> Callable[[], None]:
        """Hand ``subscriber`` every event of ``kinds`` (none given: every type) from
        now on; the function returned unsubscribes it. Either may be called from any
        thread (the subscriber is still called on the control plane's loop).

        Raises:
            KeyError: one of ``kinds`` is not an event type.
        """
        channels = [self._channels[kind] for kind in kinds or EVENT_TYPES]
        for channel in channels:
            channel.append(subscriber)

        def unsubscribe() -> None:
            for channel in channels:
                if subscriber in channel:
                    channel.remove(subscriber)

        return unsubscribe
