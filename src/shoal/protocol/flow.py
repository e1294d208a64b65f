"""Flow control of HTTP inputs: how much each side may send ahead of the other.

Both directions of a web request run on credit carried by ``Credit`` messages:
the container sends response events at most :data:`WINDOW` ahead of what the
client took, and the gateway feeds request body chunks and websocket messages at
most what the container granted (:data:`FEED_WINDOW` to start, then each event's
:func:`cost` as the app receives it). Both sides count with :func:`cost`, so
their tallies agree.
"""

from __future__ import annotations

from typing import Any, Final

#: Bytes of response body a container may send ahead of what the client took.
WINDOW: Final = 4 * 1024 * 1024
#: Bytes of request body (or websocket messages) the gateway may send ahead of what
#: the app has received.
FEED_WINDOW: Final = 256 * 1024
#: What one event costs on top of its bytes, so a flood of empty messages is bounded too.
EVENT_COST: Final = 64


def cost(event: dict[str, Any]) -> int:
    """What ``event`` counts against a flow-control window: its payload bytes, plus a little."""
    data = event.get("body") or event.get("bytes") or event.get("text") or b""
    return len(data) + EVENT_COST
