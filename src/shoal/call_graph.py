"""Modal's ``modal.call_graph`` module path: what ``FunctionCall.get_call_graph()`` returns."""

from shoal.spec.call_graph import InputInfo, InputStatus

__all__ = ["InputInfo", "InputStatus"]
