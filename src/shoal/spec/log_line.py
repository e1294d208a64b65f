"""How a container marks which input a line it prints belongs to.

A line printed while an input runs (on its thread, or in its asyncio task) goes out as
``MARK + call_id + SEPARATOR + text``; other lines go out as they are. The control plane
takes the mark off before anyone sees the line, and keeps the id beside it, so
``shoal app logs --input`` and ``FunctionCall.get_logs()`` find what an input printed.
The id is the one ``shoal.current_function_call_id()`` reports: an input's own id, or
for a stored spawn the spawn's id (what its caller's ``FunctionCall.object_id`` is).
A container can only mark its own lines, so a wrong mark misleads no one but its own
logs' readers.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Starts a marked line (ASCII record separator: not in text anyone prints).
MARK = "\x1e"
#: Ends the id of a marked line (ASCII unit separator).
SEPARATOR = "\x1f"
#: The longest id a mark may carry; a longer "mark" is left in the text as it was.
MAX_ID = 128


def marked(call_id: str, text: str) -> str:
    """``text`` (whole lines, each ending in a newline) with each line marked as
    ``call_id``'s."""
    head = f"{MARK}{call_id}{SEPARATOR}"
    return head + text[:-1].replace("\n", "\n" + head) + text[-1]


def unmarked(lines: list[str]) -> tuple[list[str], list[str] | None]:
    """``lines`` without their marks, and each line's id ("" for an unmarked line);
    None instead of the ids when no line was marked (the common case costs one scan)."""
    if not any(line.startswith(MARK) for line in lines):
        return lines, None
    texts: list[str] = []
    ids: list[str] = []
    for line in lines:
        end = line.find(SEPARATOR, 1, MAX_ID + 2) if line.startswith(MARK) else -1
        if end < 0:
            texts.append(line)
            ids.append("")
        else:
            texts.append(line[end + 1 :])
            ids.append(line[1:end])
    return texts, ids


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a container printed, as ``f.get_logs()`` and
    ``FunctionCall.get_logs()`` return it."""

    #: When the server received it (seconds since the epoch).
    time: float
    #: The container that printed it (``<app>.v<version>.<function>-c<n>`` on a server).
    container: str
    #: ``"stdout"``, ``"stderr"``, or ``"shoal"`` for the server's own line about the
    #: container (ready, stopped and why).
    stream: str
    text: str
    #: The call it was printed for ("" if it was printed outside any input).
    input: str = ""


def log_lines(answer: object) -> list[LogLine]:
    """The lines of a server's logs answer (malformed rows are left out)."""
    rows = answer.get("lines") if isinstance(answer, dict) else None
    found: list[LogLine] = []
    for row in rows if isinstance(rows, list) else ():
        if isinstance(row, dict):
            found.append(
                LogLine(
                    float(row.get("time") or 0.0),
                    str(row.get("container", "")),
                    str(row.get("stream", "")),
                    str(row.get("text", "")),
                    str(row.get("input") or ""),
                )
            )
    return found
