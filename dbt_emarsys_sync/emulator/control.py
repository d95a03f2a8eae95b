"""The control API under `/_emulator/` (no auth; the server binds to loopback by default):

    GET  /_emulator/health            {"status": "ok"}
    GET  /_emulator/contacts          every contact: objects keyed by field id, plus id and uid
    GET  /_emulator/lists             [{"id", "name", "description", "created", "contact_ids", "emails"}]
    GET  /_emulator/requests          [{"method", "path", "query", "status", "bytes", "user", "time",
                                        "keys"?, "fault"?}]; DELETE clears the log
    GET|POST|DELETE /_emulator/faults {"faults": [...]}: list, append, clear
    GET|POST /_emulator/settings      current settings; POST changes any of them
    POST /_emulator/tokens/expire     every issued OAuth token becomes invalid
    POST /_emulator/reset             back to the state at start
    POST /_emulator/seed              preload {"fields", "contacts", "lists", "users"}

Bad input answers 400 `{"error": "<what is wrong>"}` and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from .app import Emulator


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _bad(message: str) -> Response:
    return _json({"error": message}, 400)


async def _body(request: Request) -> object:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"the body is not valid JSON: {err}") from None


def control_routes(emulator: Emulator) -> list[Route]:
    store = emulator.store

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def contacts(request: Request) -> Response:
        with store.lock:
            data = [store.contact_as_api(c) for c in store.contacts.values()]
        return _json(data)

    async def lists(request: Request) -> Response:
        with store.lock:
            data = [store.list_as_inspection(cl) for cl in sorted(store.lists.values(), key=lambda cl: cl.id)]
        return _json(data)

    async def requests(request: Request) -> Response:
        if request.method == "DELETE":
            emulator.requests.clear()
            return _json({"requests": 0})
        return _json(emulator.requests.entries())

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            emulator.faults.clear()
        elif request.method == "POST":
            try:
                body = await _body(request)
                if not isinstance(body, dict) or "faults" not in body:
                    raise ValueError('the body must be {"faults": [FAULT, ...]}')
                emulator.faults.add(body["faults"])
            except ValueError as err:
                return _bad(str(err))
        return _json({"faults": emulator.faults.pending()})

    async def settings(request: Request) -> Response:
        if request.method == "POST":
            try:
                return _json(emulator.update_settings(await _body(request)))
            except ValueError as err:
                return _bad(str(err))
        return _json(emulator.settings.as_dict())

    async def expire_tokens(request: Request) -> Response:
        return _json({"expired": emulator.auth.expire_all_tokens()})

    async def reset(request: Request) -> Response:
        emulator.reset()
        return _json({"status": "reset"})

    async def seed(request: Request) -> Response:
        try:
            return _json(emulator.seed(await _body(request)))
        except ValueError as err:
            return _bad(str(err))

    return [
        Route("/_emulator/health", health, methods=["GET"]),
        Route("/_emulator/contacts", contacts, methods=["GET"]),
        Route("/_emulator/lists", lists, methods=["GET"]),
        Route("/_emulator/requests", requests, methods=["GET", "DELETE"]),
        Route("/_emulator/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/settings", settings, methods=["GET", "POST"]),
        Route("/_emulator/tokens/expire", expire_tokens, methods=["POST"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/seed", seed, methods=["POST"]),
    ]
