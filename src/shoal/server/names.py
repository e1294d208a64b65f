"""What a named object (Dict, Queue, Volume, Secret) may be called."""

from __future__ import annotations

import re
from typing import Final

from shoal.exception import InvalidError

#: 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: object, kind: str) -> str:
    """``name`` when it may name a ``kind``.

    Raises:
        InvalidError: it may not.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidError(
            f"{kind} name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with one "
            "of the first two"
        )
    return name
