"""Modal's ``modal.functions`` module path: ``from shoal.functions import FunctionCall``."""

from shoal.client.function import Function
from shoal.client.function_call import FunctionCall

__all__ = ["Function", "FunctionCall"]
