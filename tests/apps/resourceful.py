"""Functions with cpu=, memory= and gpu= requests, for the resource tests."""

import os
import time

import shoal
from apps.gate import wait_for
from shoal.backends.base import this_machine

app = shoal.App("resourceful")

#: Half the machine's cores: exactly two such containers fit at once, on any machine.
HALF = this_machine().cpu / 2


@app.function(cpu=HALF)
def half_machine(gate: str) -> int:
    wait_for(gate)
    return os.getpid()


@app.function(memory=(64, 200))
def hungry(mib: int) -> int:
    data = b"x" * (mib << 20)  # written, so resident
    time.sleep(5)
    return len(data) >> 20
