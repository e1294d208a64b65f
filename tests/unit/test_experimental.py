"""``shoal.experimental``: Modal's names, what they do here, and clear errors for the rest."""

from __future__ import annotations

import pytest

import shoal
import shoal.experimental as experimental
from shoal.exception import ExecutionError, InvalidError


def test_http_server_marks_a_class_and_checks_its_options() -> None:
    with pytest.raises(InvalidError, match="forget the parentheses"):
        experimental.http_server()
    with pytest.raises(InvalidError, match=r"1\.\.65535"):
        experimental.http_server(70000)
    with pytest.warns(UserWarning, match="proxy_regions"):
        decorate = experimental.http_server(8000, proxy_regions=["us-east"])
    with pytest.raises(InvalidError, match="decorates a class"):
        decorate(lambda: None)  # type: ignore[type-var]

    app = shoal.App("flash-unit")

    @app.cls(serialized=True)
    @experimental.http_server(8001)
    class Server:  # no methods: the server is the endpoint
        pass

    assert Server.web_methods[""]["port"] == 8001


@pytest.mark.parametrize(
    "name",
    [
        "clustered",
        "get_cluster_info",
        "get_fabric_peers",
        "flash_forward",
        "flash_get_containers",
        "flash_prometheus_autoscaler",
        "image_delete",
        "stop_fetching_inputs",
        "set_local_input_concurrency",
        "get_app_lifecycle",
    ],
)
def test_names_without_meaning_here_say_so(name: str) -> None:
    with pytest.raises(InvalidError, match=rf"shoal\.experimental\.{name} has no meaning"):
        getattr(experimental, name)(1)


def test_local_input_concurrency_is_for_containers() -> None:
    with pytest.raises(ExecutionError, match="inside a container"):
        experimental.get_local_input_concurrency()
