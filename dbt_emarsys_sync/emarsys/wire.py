"""Reading Emarsys responses: the envelope and the many shapes of per-key errors (emarsys-api.md §2, §3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class Envelope:
    status: int
    reply_code: int | None
    reply_text: str
    data: object

    @property
    def ok(self) -> bool:
        return self.status < 300 and self.reply_code == 0


def parse_envelope(status: int, body: bytes) -> Envelope:
    """Never raises: a body that is not the envelope gives reply_code None and the raw text."""
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict) or "replyCode" not in payload:
        text = body[:200].decode("utf-8", "replace") if body else ""
        return Envelope(status, None, text, None)
    code = payload.get("replyCode")
    try:
        code = int(code)
    except (TypeError, ValueError):
        code = None
    return Envelope(status, code, str(payload.get("replyText") or ""), payload.get("data"))


def key_errors(errors: object) -> dict[str, tuple[int | None, str]]:
    """Per-key errors, whatever the shape: `{key: {code: msg}}`, `{key: msg}`, `[{key, errorCode,
    errorMsg}]`, `[]`, `{}` or absent. Keys come back as strings, as we compare them to what we sent."""
    out: dict[str, tuple[int | None, str]] = {}
    if isinstance(errors, dict):
        for key, detail in errors.items():
            out[str(key)] = _code_and_message(detail)
    elif isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict) and "key" in item:
                code = item.get("errorCode")
                out[str(item["key"])] = (_int_or_none(code), str(item.get("errorMsg") or ""))
    return out


def _code_and_message(detail: object) -> tuple[int | None, str]:
    if isinstance(detail, dict) and detail:
        code, message = next(iter(detail.items()))
        return _int_or_none(code), str(message)
    if isinstance(detail, list) and detail:
        return _code_and_message(detail[0])
    return None, str(detail)


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
