"""``@app.cls``: classes whose methods run in containers that share one instance.

``Cls`` is what ``@app.cls`` returns. Calling it with the class's
``shoal.parameter()`` values gives an :class:`Obj`; ``obj.method`` is a
:class:`~shoal.client.function.Function` handle on that method, running in the
pool of that parameter set. Each distinct set of parameters has a pool (and so
containers) of its own; all methods of one set share them::

    gen = Generator(model_name="tiny")
    gen.generate.remote("hello")          # pool "Generator(model_name='tiny')"
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any, Generic, TypeVar

from shoal.bridge import run_sync
from shoal.client.decorators import Parameter
from shoal.client.function import Function, Owner
from shoal.client.options import variant_options
from shoal.client.user_module import code_ref
from shoal.client.web import web_spec
from shoal.exception import InvalidError
from shoal.protocol import markers
from shoal.spec.function import CodeRef, FunctionSpec, endpoint_name, with_options

T = TypeVar("T")


class Cls(Generic[T]):
    """A class registered with ``@app.cls``; call it with parameters to get an :class:`Obj`."""

    def __init__(self, owner: Owner, raw_cls: type[T], spec: FunctionSpec, *, serialized: bool):
        self._owner = owner
        self._raw_cls = raw_cls
        self.spec = spec
        self.serialized = serialized
        self.__name__ = raw_cls.__name__
        self.__qualname__ = raw_cls.__qualname__
        self.__module__ = raw_cls.__module__
        self.__doc__ = raw_cls.__doc__
        members = inspect.getmembers(raw_cls)  # inherited ones too
        self.parameters = {name: v for name, v in members if isinstance(v, Parameter)}
        self.methods = {name: member for name, member in members if markers.is_method(member)}
        #: Methods served as web endpoints (``@shoal.fastapi_endpoint()`` and friends), each
        #: at ``Cls.method`` on the gateway, by its decorator's options.
        self.web_methods = {
            name: web
            for name, member in members
            if name != markers.WEB and (web := web_spec(member)) is not None
        }
        served = web_spec(raw_cls)
        if served is not None:  # the class's own HTTP server: the endpoint is the class
            self.web_methods[""] = served
        if not self.methods and not self.web_methods:
            raise InvalidError(
                f"class {raw_cls.__name__} has no @shoal.method() and no web endpoint method"
            )

    @staticmethod
    def from_name(app_name: str, name: str) -> DeployedCls:
        """The class ``name`` of the deployed app ``app_name``, on the server this process
        uses: call it with parameters for an object whose methods run there.

        Raises:
            NotFoundError: no such app, or it has no such class.
            ConnectionError: no server to ask.
        """
        from shoal.client.deployed import lookup

        connection, info = run_sync(lookup(app_name, name, "class"))
        return DeployedCls(app_name, name, info, connection)

    def get_web_url(self) -> str | None:
        """The URL of the class's own HTTP server (``shoal.experimental.http_server``) while
        its app is served; None for a class without one."""
        return self._owner.web_url(self.spec.name) if "" in self.web_methods else None

    @property
    def __shoal_raw_function__(self) -> type[T]:
        """The undecorated class (what a container instantiates)."""
        return self._raw_cls

    def __call__(self, **values: Any) -> Obj:
        """An object of the class with these parameter values (the others take defaults).

        Raises:
            InvalidError: an unknown parameter, or a required one missing.
        """
        unknown = set(values) - set(self.parameters)
        if unknown:
            raise InvalidError(
                f"{self.__name__} has no parameter {sorted(unknown)}; "
                f"its parameters are {sorted(self.parameters)}"
            )
        bound = {}
        for name, declared in self.parameters.items():
            if name in values:
                bound[name] = values[name]
            elif declared.required:
                raise InvalidError(f"{self.__name__} needs parameter {name!r}")
            else:
                bound[name] = declared.default
        return Obj(self, bound)

    def with_options(self, **options: Any) -> Cls[T]:
        """This class with other options (Modal's ``Cls.with_options``): those of
        :meth:`Function.with_options <shoal.Function.with_options>`. Its objects run
        in pools of their own.

        Raises:
            InvalidError: an unknown option or a bad value.
        """
        spec = with_options(self.spec, **variant_options(self.spec.secrets, **options))
        return Cls(self._owner, self._raw_cls, spec, serialized=self.serialized)

    def _pool_spec(self, bound: dict[str, Any]) -> FunctionSpec:
        if not bound:
            return self.spec
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(bound.items()))
        return dataclasses.replace(self.spec, name=f"{self.spec.name}({args})")

    def _code(self, bound: dict[str, Any]) -> CodeRef:
        ref = code_ref(self._raw_cls, serialized=self.serialized)
        return dataclasses.replace(ref, parameters=pickle.dumps(bound) if bound else b"")

    def __repr__(self) -> str:
        return f"<shoal.Cls {self.spec.name}>"


class Obj:
    """An instance of an ``@app.cls`` class as the caller sees it: its methods are handles."""

    def __init__(self, cls: Cls[Any], bound: dict[str, Any]) -> None:
        self._cls = cls
        self._bound = bound
        self._spec = cls._pool_spec(bound)
        cls._owner.declare(self._spec, lambda: cls._code(bound))
        self._handles: dict[str, Function[Any, Any]] = {}

    def _pool(self) -> Any:
        """The pool of this object's parameter set (what its class's own server, an
        ``experimental.http_server``, is served by)."""
        return self._cls._owner.pool(self._spec.name)

    def __getattr__(self, name: str) -> Function[Any, Any]:
        raw = self._cls.methods.get(name)
        if raw is None and name and name in self._cls.web_methods:
            raw = getattr(self._cls.__shoal_raw_function__, name)
        if raw is None:
            raise AttributeError(f"{self._cls.__name__} has no @shoal.method() {name!r}")
        handle = self._handles.get(name)
        if handle is None:
            handle = Function(
                self._cls._owner,
                raw,
                self._spec,
                serialized=self._cls.serialized,
                method=name,
                web_name=endpoint_name(self._cls.spec.name, name),
            )
            self._handles[name] = handle
        return handle

    def __repr__(self) -> str:
        return f"<shoal.Obj {self._spec.name}>"


class DeployedCls:
    """A class of a deployed app, found by name (``shoal.Cls.from_name``)."""

    def __init__(self, app_name: str, name: str, info: dict[str, Any], connection: Any) -> None:
        self._app_name = app_name
        self.__name__ = name
        self._methods: dict[str, bool] = dict(info.get("methods", {}))
        self._methods.update(dict.fromkeys(info.get("web_methods") or {}, False))
        self._parameters = set(info.get("parameters", []))
        #: Its web endpoints' URLs, by ``Cls.method`` (its own server's: by its name).
        self._web_urls: dict[str, str | None] = dict(info.get("web_urls") or {})
        if info.get("web_url"):
            self._web_urls[name] = info["web_url"]
        self._connection = connection

    def get_web_url(self) -> str | None:
        """The URL of the class's own HTTP server (``experimental.http_server``), if any."""
        return self._web_urls.get(self.__name__)

    def __call__(self, **values: Any) -> DeployedObj:
        """An object with these parameter values (the others take their defaults there).

        Raises:
            InvalidError: an unknown parameter.
        """
        from shoal.client.deployed import DeployedApp, pickled_parameters

        unknown = set(values) - self._parameters
        if unknown:
            raise InvalidError(
                f"{self.__name__} has no parameter {sorted(unknown)}; "
                f"its parameters are {sorted(self._parameters)}"
            )
        owner = DeployedApp(
            self._app_name, self._connection, pickled_parameters(values), self._web_urls
        )
        return DeployedObj(self, owner)

    def __repr__(self) -> str:
        return f"<shoal.Cls {self._app_name}/{self.__name__}>"


class DeployedObj:
    """An object of a deployed class: its methods are handles on the server's pool."""

    def __init__(self, cls: DeployedCls, owner: Owner) -> None:
        self._cls = cls
        self._owner = owner
        self._handles: dict[str, Function[Any, Any]] = {}

    def __getattr__(self, name: str) -> Function[Any, Any]:
        if name.startswith("_") or name not in self._cls._methods:
            raise AttributeError(f"{self._cls.__name__} has no method {name!r}")
        handle = self._handles.get(name)
        if handle is None:
            spec = FunctionSpec(name=self._cls.__name__)
            generator = self._cls._methods[name]
            handle = Function(
                self._owner,
                None,
                spec,
                serialized=False,
                method=name,
                is_generator=generator,
                web_name=f"{self._cls.__name__}.{name}",
            )
            self._handles[name] = handle
        return handle
