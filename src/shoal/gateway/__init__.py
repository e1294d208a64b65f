"""HTTP in, inputs out: the gateway that serves web endpoints (the ASGI side inside a
container is :mod:`shoal.container.web`)."""
