"""HTTP in, inputs out: the gateway that serves web endpoints, and the adapters that
turn a web function into an ASGI app inside its container."""
