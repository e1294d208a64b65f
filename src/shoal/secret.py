"""Modal's ``modal.secret`` module path: ``from shoal.secret import Secret``."""

from shoal.client.secret import Secret

__all__ = ["Secret"]
