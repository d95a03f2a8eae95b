"""The emulator's live settings: limits, timing, and one switch per open question of the API notes.

Where emarsys-api.md §10 (or a [?] elsewhere in it) leaves Emarsys's behaviour open, the emulator makes
it a setting whose default is the more hostile choice, so that code tested here also copes with the
worse of the two possibilities. Every setting is settable at start (`EmulatorConfig(name=value)`, CLI
flags, `--config FILE`) and at run time (`POST /_emulator/settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _setting(default: Any, doc: str, choices: tuple | None = None, question: str | None = None,
             minimum: float | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "choices": choices, "question": question,
                                            "minimum": minimum})


@dataclass(kw_only=True)
class Settings:
    # -- limits and timing -----------------------------------------------------------------------
    rate_limit: int = _setting(1000, "Requests per minute per API user (0 = off); a user's own "
                               "`rate_limit` overrides it.", question="§10.11", minimum=0)
    token_ttl: int = _setting(3600, "Lifetime of issued OAuth tokens in seconds (`expires_in`).",
                              question="§10.1", minimum=1)
    read_after_write_lag: float = _setting(0.0, "Seconds a newly created contact (or contact list) "
                                           "stays invisible to reads; upserts of its key meanwhile fail "
                                           "with 2009 (the documented race).", minimum=0)
    clock_skew: float = _setting(0.0, "Seconds the server's clock is ahead of real time (WSSE "
                                 "`Created` check, the `Date` and `X-RateLimit-Reset` headers).")
    # -- open questions (emarsys-api.md §10): hostile defaults -------------------------------------
    cross_scheme_auth: bool = _setting(False, "Accept bearer tokens on /api/v2 and WSSE on /api/v3.",
                                       question="§10.1")
    v3_contact_ids: bool = _setting(False, "Serve `GET /api/v3/contactlist/{id}/contactIds` (otherwise "
                                    "only /api/v2 has it and v3 answers 404).", question="§10.2")
    rate_limit_window: str = _setting("sliding", "`sliding` (the last 60 s) or `fixed` (calendar "
                                      "minutes) rate-limit window.", ("sliding", "fixed"), "§10.3")
    rate_limit_reply: str = _setting("envelope", "429 body: `envelope` (replyCode 7003, the documented code) "
                                     "or `empty`.", ("envelope", "empty"), "§10.3")
    shuffle_ids: bool = _setting(True, "Return `data.ids` of a batch in an order unrelated to "
                                 "`contacts[]`.", question="§10.4")
    all_rows_failed_status: int = _setting(400, "HTTP status of a contact batch in which every row "
                                           "failed (400 with the first error's replyCode, or 200).",
                                           (400, 200), "§10.4")
    duplicate_keys_in_batch: str = _setting("reject", "Rows repeating a key inside one batch: `reject` "
                                            "every one of them (2009), or `last_wins` / `first_wins`.",
                                            ("reject", "last_wins", "first_wins"), "§10.5")
    email_case_sensitive: bool = _setting(True, "Match email keys case-sensitively (values are always "
                                          "stored as sent).", question="§10.6")
    email_trim_whitespace: bool = _setting(False, "Ignore leading/trailing whitespace when matching "
                                           "email keys.", question="§10.6")
    empty_string_clears: bool = _setting(True, "`\"\"` clears a field like null (otherwise `\"\"` "
                                         "leaves it unchanged).", question="§10.7")
    truncate_text: bool = _setting(False, "Over-length text is cut to the field's limit instead of "
                                   "rejecting the contact with 2007.", question="§10.7")
    string_field_ids: bool = _setting(False, "Accept string ids (`\"email\"`) as field keys inside "
                                      "contacts and getdata `fields` (string ids as `key_id` are always "
                                      "accepted).", question="§10.8")
    strict_list_names: bool = _setting(True, "Contact-list names: at most 255 characters, none of "
                                       "< > \" \\ or control characters (3004).", question="§10.9")
    count_existing_members: bool = _setting(False, "Count contacts that were already members in "
                                            "`inserted_contacts`.", question="§10.9")
    delete_reports_count: bool = _setting(False, "`POST /contact/delete` answers "
                                          "`deleted_contacts` beside `errors`.", question="§10.10")
    multiple_ids_shape: str = _setting("mixed", "checkids with `get_multiple_ids`: `mixed` (a string "
                                       "for one match, a list for several) or `list` (always a list).",
                                       ("mixed", "list"), "§10.10")
    reject_reused_nonce: bool = _setting(True, "Reject a WSSE nonce seen before.", question="§1.2")
    forbidden_body: str = _setting("plain", "Body of a 403 for a missing permission: `plain` "
                                   "(`Forbidden`, not JSON) or `envelope`.", ("plain", "envelope"), "§9")

    # -- access ------------------------------------------------------------------------------------

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(Settings)]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}

    def copy(self) -> Settings:
        return Settings(**self.as_dict())

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Validate every change first, then apply them all. Raises ValueError naming the setting."""
        validated = {name: validate_setting(name, value) for name, value in changes.items()}
        for name, value in validated.items():
            setattr(self, name, value)
        return list(validated)


_FIELDS = {f.name: f for f in fields(Settings)}


def validate_setting(name: str, value: Any) -> Any:
    spec = _FIELDS.get(name)
    if spec is None:
        raise ValueError(f"unknown setting {name!r}; known settings: {', '.join(_FIELDS)}")
    kind = type(spec.default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"setting {name!r} takes true or false, not {value!r}")
    elif kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"setting {name!r} takes a number, not {value!r}")
        if kind is int:
            if value != int(value):
                raise ValueError(f"setting {name!r} takes a whole number, not {value!r}")
            value = int(value)
        else:
            value = float(value)
        minimum = spec.metadata["minimum"]
        if minimum is not None and value < minimum:
            raise ValueError(f"setting {name!r} must be at least {minimum}, not {value!r}")
    elif kind is str and not isinstance(value, str):
        raise ValueError(f"setting {name!r} takes one of {spec.metadata['choices']}, not {value!r}")
    choices = spec.metadata["choices"]
    if choices is not None and value not in choices:
        raise ValueError(f"setting {name!r} takes one of {', '.join(map(str, choices))}, not {value!r}")
    return value


def setting_docs() -> list[dict[str, Any]]:
    """Name, default, meaning and the API-notes section of every setting (for the README and --help)."""
    return [{"name": f.name, "default": f.default, "doc": f.metadata["doc"],
             "question": f.metadata["question"], "choices": f.metadata["choices"]}
            for f in fields(Settings)]


def non_default_fields(obj: Settings) -> dict[str, Any]:
    """The settings of `obj` that differ from the defaults (to merge a legacy StoreOptions)."""
    return {f.name: getattr(obj, f.name) for f in fields(Settings)
            if getattr(obj, f.name) != f.default}


__all__ = ["Settings", "non_default_fields", "setting_docs", "validate_setting"]
