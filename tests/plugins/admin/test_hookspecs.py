"""dispatch-admin specifies the hook it calls, ``dispatch_register_routes``, in its own
hookspecs module and adds it when it loads; plugins implementing it keep working (issue 17)."""

from __future__ import annotations

from typing import Any

import httpx
import pluggy
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dispatch_core import Engine, hookimpl, hookspecs as core_hookspecs
from dispatch_plugins.admin import hookspecs
from dispatch_plugins.admin.app import admin_app
from dispatch_plugins.admin.auth import Token

SECRET = "s" * 16


class Routes:
    @hookimpl
    def dispatch_register_routes(self, routes: list[Any], engine: Engine) -> None:
        async def hello(request: Request) -> JSONResponse:
            return JSONResponse({"hello": "plugin"})

        routes.append(Route("/hello", hello))


class WrongArguments:
    @hookimpl
    def dispatch_register_routes(self, routes: list[Any], app: Any) -> None: ...


def test_the_spec_lives_in_the_admin_plugin() -> None:
    assert not hasattr(core_hookspecs, "dispatch_register_routes")
    engine = Engine("memory://")  # entry points: dispatch-admin loads and adds its spec
    caller = engine.pm.hook.dispatch_register_routes
    assert caller.has_spec()
    assert caller.spec is not None
    assert caller.spec.namespace is hookspecs
    assert caller.spec.argnames == ("routes", "engine")


def test_implementations_are_checked_against_the_spec() -> None:
    # Registered before dispatch-admin (user plugins come first): checked once its spec lands.
    with pytest.raises(pluggy.PluginValidationError, match="'app'"):
        Engine("memory://", plugins=[WrongArguments()])


def test_adding_the_specs_again_is_harmless() -> None:
    engine = Engine("memory://", plugins=[Routes()])
    hookspecs.add_hookspecs(engine.pm)
    hookspecs.add_hookspecs(engine.pm)
    routes: list[Any] = []
    engine.pm.hook.dispatch_register_routes(routes=routes, engine=engine)
    assert [r.path for r in routes] == ["/hello"]


async def _hello(app: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/v1/hello", headers={"Authorization": "Bearer " + SECRET})


@pytest.mark.parametrize("load_entrypoints", [True, False])
async def test_plugin_routes_are_served_with_or_without_entry_points(
    load_entrypoints: bool,
) -> None:
    # Without entry points dispatch-admin never registered as a plugin: admin_app adds the
    # spec itself before it calls the hook.
    engine = Engine("memory://", load_entrypoints=load_entrypoints, plugins=[Routes()])
    tokens = [Token(name="t", secret=SECRET, scopes=frozenset({"admin"}))]
    response = await _hello(admin_app(engine, tokens=tokens))
    assert response.json() == {"hello": "plugin"}
    assert engine.pm.hook.dispatch_register_routes.has_spec()


async def test_an_app_on_an_engine_without_any_admin_hook() -> None:
    engine = Engine("memory://", load_entrypoints=False)
    assert not hasattr(engine.pm.hook, "dispatch_register_routes")
    app = admin_app(engine, tokens=[Token(name="t", secret=SECRET, scopes=frozenset({"admin"}))])
    assert (await _hello(app)).status_code == 404
