"""Shoal: run Python functions in autoscaling pools of containers, on your own machines.

The public API follows Modal's, so ``import shoal as modal`` runs scripts that use
functions, classes, maps, generators, concurrency, batching and scaling options::

    import shoal

    app = shoal.App("demo")

    @app.function(max_containers=10)
    @shoal.concurrent(max_inputs=20)
    def fetch(url: str) -> int: ...

    with app.run():
        print(sum(fetch.map(["a", "b"])))
"""

from shoal import container_process, exception, experimental, file_io
from shoal.client.app import App
from shoal.client.cls import Cls, Obj
from shoal.client.decorators import batched, concurrent, enter, exit, method, parameter
from shoal.client.dict import Dict
from shoal.client.function import Function
from shoal.client.function_call import FunctionCall
from shoal.client.image import Image
from shoal.client.output import enable_output
from shoal.client.queue import Queue
from shoal.client.sandbox import Sandbox
from shoal.client.secret import Secret
from shoal.client.volume import Volume
from shoal.client.web import asgi_app, fastapi_endpoint, web_endpoint, web_server, wsgi_app
from shoal.context import current_function_call_id, current_input_id, is_local
from shoal.exception import (
    ContainerCrashError,
    ContainerInitError,
    Error,
    FunctionTimeoutError,
    InvalidError,
    RemoteError,
)
from shoal.spec.function import Retries
from shoal.spec.log_line import LogLine
from shoal.spec.schedule import Cron, Period
from shoal.spec.stats import FunctionStats

__version__ = "0.1.0"

__all__ = [
    "App",
    "Cls",
    "ContainerCrashError",
    "ContainerInitError",
    "Cron",
    "Dict",
    "Error",
    "Function",
    "FunctionCall",
    "FunctionStats",
    "FunctionTimeoutError",
    "Image",
    "InvalidError",
    "LogLine",
    "Obj",
    "Period",
    "Queue",
    "RemoteError",
    "Retries",
    "Sandbox",
    "Secret",
    "Volume",
    "__version__",
    "asgi_app",
    "batched",
    "concurrent",
    "container_process",
    "current_function_call_id",
    "current_input_id",
    "enable_output",
    "enter",
    "exception",
    "exit",
    "experimental",
    "fastapi_endpoint",
    "file_io",
    "is_local",
    "method",
    "parameter",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]
