"""Modal's ``modal.dict`` module path: ``from shoal.dict import Dict``."""

from shoal.client.dict import Dict

__all__ = ["Dict"]
