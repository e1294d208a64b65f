"""What the caller sees when things go wrong: its own exception types, timeouts, retries.

shoal run examples/errors.py
"""

import time

import shoal

app = shoal.App("errors")


class PaymentDeclined(Exception):
    pass


@app.function()
def charge(amount: int) -> int:
    if amount > 100:
        raise PaymentDeclined(f"{amount} is over the limit")
    return amount


@app.function(timeout=1)
def too_slow() -> None:
    time.sleep(10)


@app.function(retries=shoal.Retries(max_retries=3, initial_delay=0.1))
def sometimes(x: int) -> int:
    if shoal.current_input_id() and time.time_ns() % 3 == 0:
        raise RuntimeError("transient")  # retried up to three times
    return x


@app.local_entrypoint()
def main() -> None:
    try:
        charge.remote(500)
    except PaymentDeclined as exc:  # the function's own exception type
        print(f"declined: {exc}")
    try:
        too_slow.remote()
    except shoal.FunctionTimeoutError as exc:
        print(f"timeout: {exc}")
    results = list(charge.map([10, 200, 30], return_exceptions=True))
    print("map with return_exceptions:", [type(r).__name__ for r in results])
    print("retried inputs:", sum(sometimes.map(range(20))))
