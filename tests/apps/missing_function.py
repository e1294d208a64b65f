"""Defines its function only in the caller, so a container cannot find it."""

import shoal

app = shoal.App("missing")

if shoal.is_local():

    @app.function()
    def ghost() -> int:
        return 1
