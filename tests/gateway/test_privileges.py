"""Tenant isolation and privileges: every gateway route × every role, with the caller's own conversations,
another tenant's, guessed ids, smuggled tenants (headers, query, body), duplicated Authorization headers, forged
and missing Origins, revoked and unknown keys, and widget keys reaching for conversations they did not create.

`ROUTES` is the table of every /v1 route and the permission it needs (checked against the app itself). A route
added to the gateway is added here: its row is then tried by every role in every case below. What a role may do
comes from `gateway.access.ROLE_PERMISSIONS`; allowed calls must succeed with `ok`, the rest must be refused with
the status each case says. Every case runs through the whole in-process stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from gateway.access import ROLE_PERMISSIONS, Permission, Role
from gateway.app import create_app as create_gateway
from gateway.tenants import create_key, create_tenant_with_key, revoke_key_id
from supportbot.settings import GatewaySettings
from tests.stack import Stack, in_process_stack

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """As the app declares it; `{conversation_id}` is filled in per case."""
    permission: Permission
    ok: int
    """The status of an allowed call on the caller's own conversation."""
    body: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)

    @property
    def names_a_conversation(self) -> bool:
        return "{conversation_id}" in self.path

    def url(self, conversation_id: str | None) -> str:
        return self.path.format(conversation_id=conversation_id) if self.names_a_conversation else self.path


ROUTES = [
    Route("POST", "/v1/conversations", Permission.CREATE_CONVERSATION, 201),
    Route("POST", "/v1/conversations/{conversation_id}/messages", Permission.POST_TURN, 200,
          body={"text": "Hello there!"}),
    Route("GET", "/v1/conversations/{conversation_id}/messages", Permission.READ_TRANSCRIPT, 200),
    Route("GET", "/v1/conversations", Permission.LIST_CONVERSATIONS, 200),
    Route("DELETE", "/v1/conversations/{conversation_id}", Permission.ERASE_CONVERSATION, 204),
    Route("GET", "/v1/usage", Permission.READ_USAGE, 200),
]

SHOP = "https://shop.acme.example"
BLOG = "https://blog.acme.example"
GLOBEX_SHOP = "https://shop.globex.example"
GUESSED_ID = "AAAAAAAAAAAAAAAAAAAAAA"


def route_permissions(app: Any) -> dict[tuple[str, str], list[Permission]]:
    """(method, path) → the permissions its dependencies require, for every /v1 route of `app`."""

    def found(dependant: Any) -> list[Permission]:
        own = getattr(dependant.call, "permission", None)
        nested = [p for sub in dependant.dependencies for p in found(sub)]
        return ([own] if own is not None else []) + nested

    def routes(container: Any) -> list[APIRoute]:  # included routers nest (FastAPI's `original_router`)
        nested = getattr(container, "original_router", None)
        if nested is not None:
            return routes(nested)
        found_routes: list[APIRoute] = []
        for route in getattr(container, "routes", []):
            found_routes += [route] if isinstance(route, APIRoute) else routes(route)
        return found_routes

    return {(method, route.path): found(route.dependant) for route in routes(app.router)
            if route.path.startswith("/v1/") for method in route.methods}


def test_every_route_is_in_the_table_and_declares_its_permission(tmp_path: Path) -> None:
    app = create_gateway(GatewaySettings(database_url=f"sqlite:///{tmp_path / 'gw.db'}"))
    declared = route_permissions(app)
    table = {(r.method, r.path): r.permission for r in ROUTES}
    assert len(table) == len(ROUTES), "one row per route"
    assert set(declared) == set(table), "ROUTES must list exactly the gateway's /v1 routes"
    for key, permissions in declared.items():
        assert permissions == [table[key]], f"{key} must depend on require({table[key]}) once, not {permissions}"


@dataclass
class Caller:
    """A key of tenant acme (or another), with the headers a well-behaved client of its kind sends."""

    name: str
    role: Role
    key: str
    key_id: str
    origin: str | None = None

    def headers(self, token: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if self.origin:
            headers["Origin"] = self.origin
        if token:
            headers["X-Conversation-Token"] = token
        return headers


@dataclass
class World:
    stack: Stack
    callers: dict[str, Caller]
    globex_conversations: list[str]
    """Every conversation of the other tenant, none of which may ever show up in acme's answers."""
    globex_widget: tuple[str, str]
    """(conversation id, token) of a globex widget conversation."""
    failures: list[str] = field(default_factory=list)

    async def new_conversation(self, caller: Caller) -> tuple[str, str | None]:
        """A fresh conversation of acme for `caller` to use: its own for a widget, else one made by the api key."""
        maker = caller if caller.role is Role.WIDGET else self.callers["api"]
        response = await self.stack.client.post("/v1/conversations", headers=maker.headers())
        assert response.status_code == 201, response.text
        body = response.json()
        return body["id"], body["conversation_token"]

    async def call(self, route: Route, headers: dict[str, str] | list[tuple[str, str]],
                   conversation_id: str | None, *, query: dict[str, str] | None = None,
                   body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.stack.client.request(
            route.method, route.url(conversation_id), headers=headers, params={**route.query, **(query or {})},
            json=body if body is not None else route.body)

    def expect(self, what: str, response: httpx.Response, status: int,
               check: Callable[[httpx.Response], str | None] | None = None) -> None:
        problem = None
        if response.status_code != status:
            problem = f"expected {status}, got {response.status_code}: {response.text[:300]}"
        elif check is not None:
            problem = check(response)
        if problem is None:
            asked = str(response.request.url)  # a 404 may repeat the id it was asked for: nothing learnt
            leaked = [c for c in self.globex_conversations if c in response.text and c not in asked]
            problem = f"names another tenant's conversations {leaked}" if leaked else None
        if problem:
            self.failures.append(f"{what}: {problem}")


async def build_world(stack: Stack) -> World:
    sessions = stack.apps["gateway"].state.sessions
    admin = await create_tenant_with_key(sessions, tenant_id="acme")
    callers = {"admin": Caller("admin", Role.ADMIN, admin.key, admin.key_id)}
    for name, role, origins in (("api", Role.API, ()), ("agent", Role.AGENT, ()), ("widget", Role.WIDGET, (SHOP,)),
                                ("other_widget", Role.WIDGET, (BLOG,)), ("revoked", Role.API, ())):
        issued = await create_key(sessions, tenant_id="acme", role=role, origins=origins)
        callers[name] = Caller(name, role, issued.key, issued.key_id, origins[0] if origins else None)
    assert await revoke_key_id(sessions, key_id=callers["revoked"].key_id)

    globex = await create_tenant_with_key(sessions, tenant_id="globex")
    globex_widget = await create_key(sessions, tenant_id="globex", role=Role.WIDGET, origins=[GLOBEX_SHOP])
    callers["globex_api"] = Caller("globex_api", Role.API, globex.key, globex.key_id)
    callers["globex_widget"] = Caller("globex_widget", Role.WIDGET, globex_widget.key, globex_widget.key_id,
                                      GLOBEX_SHOP)
    world = World(stack, callers, [], ("", ""))
    for maker in ("globex_api", "globex_widget"):
        created = await stack.client.post("/v1/conversations", headers=callers[maker].headers())
        assert created.status_code == 201, created.text
        world.globex_conversations.append(created.json()["id"])
        if maker == "globex_widget":
            world.globex_widget = (created.json()["id"], created.json()["conversation_token"])
    said = await stack.client.post(f"/v1/conversations/{world.globex_conversations[0]}/messages",
                                   headers=callers["globex_api"].headers(), json={"text": "Hello there!"})
    assert said.status_code == 200, said.text
    return world


def forbidden_naming(role: Role) -> Callable[[httpx.Response], str | None]:
    def check(response: httpx.Response) -> str | None:
        error = response.json()["error"]
        if error["type"] != "forbidden" or f"{role.value} keys may not" not in error["message"]:
            return f"not a clear 403 naming the role: {error}"
        return None

    return check


def error_field(name: str) -> Callable[[httpx.Response], str | None]:
    def check(response: httpx.Response) -> str | None:
        error = response.json()["error"]
        return None if error.get("field") == name else f"the error does not name {name}: {error}"

    return check


async def every_role_on_every_route(world: World) -> None:
    for route in ROUTES:
        for name in ("admin", "api", "agent", "widget"):
            caller = world.callers[name]
            what = f"{name} {route.method} {route.path}"
            own, token = await world.new_conversation(caller)
            if route.permission not in ROLE_PERMISSIONS[caller.role]:
                world.expect(f"{what} (own)", await world.call(route, caller.headers(token), own), 403,
                             forbidden_naming(caller.role))
                if route.names_a_conversation:  # the same 403 whoever's the id: nothing learnt about it
                    world.expect(f"{what} (other tenant's)", await world.call(
                        route, caller.headers(token), world.globex_conversations[0]), 403)
                continue
            world.expect(f"{what} (own)", await world.call(route, caller.headers(token), own), route.ok)
            # Tenants named by the client are ignored: the key alone says whose data this is.
            smuggle = {"X-Supportbot-Tenant": "globex", "X-Tenant-Id": "globex"}
            smuggled = {**caller.headers(token), **smuggle}
            if route.names_a_conversation:
                again, again_token = await world.new_conversation(caller)
                world.expect(f"{what} (own, tenant smuggled in headers and query)", await world.call(
                    route, {**caller.headers(again_token), **smuggle}, again, query={"tenant_id": "globex"}),
                    route.ok)
                for label, target in (("other tenant's", world.globex_conversations[0]),
                                      ("other tenant's widget", world.globex_widget[0]), ("guessed", GUESSED_ID)):
                    world.expect(f"{what} ({label} id)", await world.call(route, caller.headers(token), target), 404)
                    world.expect(f"{what} ({label} id, tenant smuggled)", await world.call(
                        route, smuggled, target, query={"tenant_id": "globex"}), 404)
            else:
                world.expect(f"{what} (tenant smuggled in headers and query)", await world.call(
                    route, smuggled, None, query={"tenant_id": "globex"}), route.ok)
            if route.method == "POST":
                world.expect(f"{what} (tenant_id in the body)", await world.call(
                    route, caller.headers(token), own, body={**(route.body or {}), "tenant_id": "globex"}), 422,
                    error_field("tenant_id"))


async def keys_that_are_not_valid(world: World) -> None:
    revoked = world.callers["revoked"]
    valid, other_tenant = world.callers["api"], world.callers["globex_api"]
    for route in ROUTES:
        conversation, _ = await world.new_conversation(valid)
        what = f"{route.method} {route.path}"
        for label, headers in (
            ("revoked key", revoked.headers()),
            ("no key", {}),
            ("unknown key", {"Authorization": "Bearer sb_never_issued_0123456789abcdef"}),
            ("not Bearer", {"Authorization": f"Basic {valid.key}"}),
            ("two Authorization headers", [("Authorization", f"Bearer {valid.key}"),
                                           ("Authorization", f"Bearer {other_tenant.key}")]),
            ("two Authorization headers, one revoked", [("Authorization", f"Bearer {revoked.key}"),
                                                        ("Authorization", f"Bearer {valid.key}")]),
        ):
            world.expect(f"{what} ({label})", await world.call(route, headers, conversation), 401,
                         error_field("Authorization"))


async def widget_keys_use_only_their_own_conversations(world: World) -> None:
    widget, other = world.callers["widget"], world.callers["other_widget"]
    turn, transcript = ROUTES[1], ROUTES[2]
    created = await world.stack.client.post("/v1/conversations", headers=widget.headers())
    world.expect("widget creates", created, 201)
    mine, my_token = created.json()["id"], created.json()["conversation_token"]
    if not my_token or created.json()["channel"] != "web":
        world.failures.append(f"a widget conversation comes with its token, on channel web: {created.json()}")
    theirs, their_token = await world.new_conversation(other)
    by_api, _ = await world.new_conversation(world.callers["api"])
    for route in (turn, transcript):
        what = f"widget {route.method} {route.path}"
        world.expect(f"{what} (own, with its token)", await world.call(route, widget.headers(my_token), mine), 200)
        world.expect(f"{what} (own, no token)", await world.call(route, widget.headers(), mine), 400,
                     error_field("X-Conversation-Token"))
        world.expect(f"{what} (own, wrong token)", await world.call(
            route, widget.headers("sbc_" + "x" * 43), mine), 404)
        world.expect(f"{what} (own, another conversation's token)", await world.call(
            route, widget.headers(their_token), mine), 404)
        world.expect(f"{what} (own, two tokens)", await world.call(
            route, [*widget.headers().items(), ("X-Conversation-Token", my_token),
                    ("X-Conversation-Token", their_token or "")], mine), 400)
        world.expect(f"{what} (same tenant, other widget's, with its token)", await world.call(
            route, widget.headers(their_token), theirs), 404)
        world.expect(f"{what} (same tenant, other widget's, with own token)", await world.call(
            route, widget.headers(my_token), theirs), 404)
        world.expect(f"{what} (same tenant, the api key's)", await world.call(
            route, widget.headers(my_token), by_api), 404)
        world.expect(f"{what} (other tenant's widget's, with its token)", await world.call(
            route, widget.headers(world.globex_widget[1]), world.globex_widget[0]), 404)
        # The conversation token is no key: without the widget's own key it opens nothing.
        world.expect(f"{route.method} {route.path} (token with the other widget's key)", await world.call(
            route, other.headers(my_token), mine), 404)
    # The same widget key, asked again with its token: still only its own transcript.
    read = await world.call(transcript, widget.headers(my_token), mine)
    world.expect("widget reads its transcript", read, 200,
                 lambda r: None if len(r.json()["messages"]) == 2 else f"not its two messages: {r.json()}")


async def origins(world: World) -> None:
    widget, api = world.callers["widget"], world.callers["api"]
    conversation, token = await world.new_conversation(widget)
    for route in ROUTES:
        what = f"{route.method} {route.path}"
        base = widget.headers(token)
        for label, headers in (
            ("widget, forged Origin", {**base, "Origin": "https://evil.example"}),
            ("widget, the other widget's Origin", {**base, "Origin": BLOG}),
            ("widget, another tenant's widget's Origin", {**base, "Origin": GLOBEX_SHOP}),
            ("widget, Origin http:// of its https site", {**base, "Origin": SHOP.replace("https", "http")}),
            ("widget, Origin null", {**base, "Origin": "null"}),
            ("widget, no Origin", {k: v for k, v in base.items() if k != "Origin"}),
            ("widget, two Origins", [*base.items(), ("Origin", "https://evil.example")]),
            ("api key from a web page", {**api.headers(), "Origin": SHOP}),
            ("admin key from a web page", {**world.callers["admin"].headers(), "Origin": SHOP}),
        ):
            world.expect(f"{what} ({label})", await world.call(route, headers, conversation), 403,
                         error_field("Origin"))

    # Only a widget key's own origin may read an answer in a browser; never "*", never with credentials.
    allowed = await world.call(ROUTES[2], widget.headers(token), conversation)
    world.expect("widget answer's CORS headers", allowed, 200, lambda r: None if (
        r.headers.get("access-control-allow-origin") == SHOP and "Origin" in r.headers.get("vary", "")
        and "access-control-allow-credentials" not in r.headers) else f"CORS headers: {dict(r.headers)}")
    refused = await world.call(ROUTES[2], {**widget.headers(token), "Origin": BLOG}, conversation)
    world.expect("a refused origin's CORS headers", refused, 403, lambda r: None if (
        "access-control-allow-origin" not in r.headers and "Origin" in r.headers.get("vary", ""))
        else f"CORS headers: {dict(r.headers)}")
    server = await world.call(ROUTES[2], api.headers(), conversation)
    world.expect("api answer's CORS headers", server, 200, lambda r: None if (
        "access-control-allow-origin" not in r.headers) else f"CORS headers: {dict(r.headers)}")

    client = world.stack.client
    for origin, status in ((SHOP, 204), (BLOG, 204), (GLOBEX_SHOP, 204), ("https://evil.example", 403),
                           ("null", 403)):
        preflight = await client.options("/v1/conversations", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-conversation-token, idempotency-key"})

        def answered(r: httpx.Response, origin: str = origin, status: int = status) -> str | None:
            allow = r.headers.get("access-control-allow-origin")
            if "Origin" not in r.headers.get("vary", "") or allow == "*":
                return f"preflight headers: {dict(r.headers)}"
            if status == 204 and not (allow == origin and "x-conversation-token" in
                                      r.headers.get("access-control-allow-headers", "").lower()):
                return f"preflight not allowed as it should: {dict(r.headers)}"
            if status != 204 and allow is not None:
                return f"preflight of an unlisted origin allowed: {dict(r.headers)}"
            return None

        world.expect(f"preflight from {origin}", preflight, status, answered)
    for label, headers in (("a method widgets never use", {"Access-Control-Request-Method": "DELETE"}),
                           ("a header widgets never send", {"Access-Control-Request-Method": "POST",
                                                            "Access-Control-Request-Headers": "x-supportbot-tenant"})):
        world.expect(f"preflight asking {label}", await client.options(
            "/v1/conversations/x/messages", headers={"Origin": SHOP, **headers}), 403)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_every_route_every_role_every_trespass(database: str, request: pytest.FixtureRequest, data_dir: Path,
                                                    model_cache_dir: Path) -> None:
    url = (f"sqlite:///{data_dir / 'supportbot.db'}" if database == "sqlite"
           else request.getfixturevalue("postgres_url"))
    # Failed authentications are throttled per client address (tests/gateway/test_limits*.py): here each
    # refusal must show its own status, so that throttle is off.
    async with in_process_stack(database_url=url, data_dir=data_dir, model_dir=model_cache_dir,
                                gateway_settings={"auth_failure_limit": "off"}) as stack:
        world = await build_world(stack)
        await every_role_on_every_route(world)
        await keys_that_are_not_valid(world)
        await widget_keys_use_only_their_own_conversations(world)
        await origins(world)
        # And the other tenant's conversation is as it was: nobody from acme changed or erased it.
        globex = world.callers["globex_api"]
        transcript = await stack.client.get(f"/v1/conversations/{world.globex_conversations[0]}/messages",
                                            headers=globex.headers())
        assert transcript.status_code == 200
        assert [m["role"] for m in transcript.json()["messages"]] == ["customer", "bot"]
    assert not world.failures, "\n" + "\n".join(world.failures)
