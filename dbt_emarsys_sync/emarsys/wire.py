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
    return Envelope(status, _int_or_none(payload.get("replyCode")), str(payload.get("replyText") or ""),
                    payload.get("data"))


def key_errors(errors: object) -> dict[str, tuple[int | None, str]]:
    """Per-key errors, whatever the shape Emarsys chose for this endpoint:

        {key: {code: msg}}                  write endpoints, list operations, checkids
        [{key, errorCode, errorMsg}]        getdata
        {key: msg}, [{key: {code: msg}}]    seen in the wild
        {}, [], None                        nothing failed

    Keys come back as strings (JSON numbers for numeric keys included), to be compared with what was
    sent; codes as ints when they are numbers."""
    out: dict[str, tuple[int | None, str]] = {}
    if isinstance(errors, dict):
        for key, detail in errors.items():
            out[str(key)] = _code_and_message(detail)
    elif isinstance(errors, list):
        for item in errors:
            if not isinstance(item, dict):
                continue
            if "key" in item:
                code = item.get("errorCode", item.get("code"))
                message = item.get("errorMsg", item.get("message", item.get("msg", "")))
                out[str(item["key"])] = (_int_or_none(code), str(message or ""))
            else:
                out.update(key_errors(item))
    return out


def _code_and_message(detail: object) -> tuple[int | None, str]:
    if isinstance(detail, dict) and detail:
        code, message = next(iter(detail.items()))
        if len(detail) > 1:  # several problems with one key: keep the first code, every message
            message = "; ".join(str(m) for m in detail.values())
        return _int_or_none(code), str(message)
    if isinstance(detail, list) and detail:
        return _code_and_message(detail[0])
    return None, "" if detail is None else str(detail)


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
