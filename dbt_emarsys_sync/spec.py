"""Sync declarations: `config.meta.emarsys` of a model -> validated `SyncSpec` objects.

Pure: no dbt, no HTTP. The input is the meta dict dbt put in the manifest plus where it came from, so
every problem can name the model, the YAML file and the key path.

    emarsys:
      syncs:
        - name: shop_contacts
          object: contact                  # contact | contact_list
          behaviour: update_or_create      # update_or_create | update_only | mirror
          key: {column: email, field: email}
          fields: {first_name: first_name, optin: optin}   # column -> Emarsys field
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FieldRef = int | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeySpec(_Strict):
    column: str
    field: FieldRef = "email"


class SafetySpec(_Strict):
    # Mirror: refuse to remove more than this share of the list's members in one run.
    max_removal_share: float = Field(0.2, ge=0, le=1)
    # Mirror: refuse to act on an empty model (which would empty the list).
    allow_empty: bool = False


class SyncSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=80)
    object: Literal["contact", "contact_list"] = "contact"
    behaviour: Literal["update_or_create", "update_only", "mirror"] = "update_or_create"
    key: KeySpec
    fields: dict[str, FieldRef] = Field(default_factory=dict)      # column -> Emarsys field
    constants: dict[str, Any] = Field(default_factory=dict)        # Emarsys field -> fixed value
    list: str | None = None                                        # contact list name (mirror)
    null_policy: Literal["skip", "clear"] = "skip"
    normalize_email: bool = True
    truncate_text: bool = False
    timezone: str = "UTC"
    safety: SafetySpec = Field(default_factory=SafetySpec)
    enabled: bool = True

    @field_validator("fields")
    @classmethod
    def _no_empty_targets(cls, value: dict[str, FieldRef]) -> dict[str, FieldRef]:
        for column, target in value.items():
            if target in ("", None):
                raise ValueError(f"column {column!r} maps to no field")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SyncSpec":
        if self.object == "contact_list" and self.behaviour != "mirror":
            raise ValueError("a contact_list sync has behaviour 'mirror'")
        if self.behaviour == "mirror" and self.object != "contact_list":
            raise ValueError("behaviour 'mirror' needs object 'contact_list'")
        if self.object == "contact_list" and not self.list:
            raise ValueError("a contact_list sync needs 'list': the name of the Emarsys contact list")
        if str(self.key.field) in ("id", "uid") and self.behaviour != "update_only":
            raise ValueError("the Emarsys contact id can only be the key of an update_only sync "
                             "(Emarsys cannot create contacts keyed by id)")
        return self


class ModelSyncs(_Strict):
    syncs: list[SyncSpec] = Field(min_length=1)


@dataclass(frozen=True)
class ModelRef:
    """The dbt model a sync reads, and where its declaration lives (for error messages)."""

    unique_id: str
    name: str
    relation_name: str | None
    yaml_path: str           # the file that declares the meta (the model's YAML, else its SQL)
    materialized: str = "table"


@dataclass(frozen=True)
class Sync:
    spec: SyncSpec
    model: ModelRef

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Problem:
    model: str
    path: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: model {self.model}: {self.key}: {self.message}"


class SpecError(Exception):
    """Every problem found in the declarations, reported at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def parse_model_meta(model: ModelRef, emarsys_meta: Any) -> tuple[list[Sync], list[Problem]]:
    """Validate one model's `meta.emarsys`; return its syncs and every problem found."""
    try:
        parsed = ModelSyncs.model_validate(emarsys_meta)
    except ValidationError as exc:
        return [], [_problem(model, err) for err in exc.errors()]
    return [Sync(spec, model) for spec in parsed.syncs], []


def parse_declarations(models: list[tuple[ModelRef, Any]]) -> list[Sync]:
    """All syncs of a project; raises SpecError listing every problem (including duplicate names)."""
    syncs: list[Sync] = []
    problems: list[Problem] = []
    for model, meta in models:
        found, errs = parse_model_meta(model, meta)
        syncs.extend(found)
        problems.extend(errs)
    seen: dict[str, Sync] = {}
    for sync in syncs:
        if sync.name in seen:
            other = seen[sync.name].model
            problems.append(Problem(sync.model.name, sync.model.yaml_path, "emarsys.syncs.name",
                                    f"the sync name {sync.name!r} is also used by model {other.name} "
                                    f"({other.yaml_path}); sync names must be unique"))
        seen[sync.name] = sync
    if problems:
        raise SpecError(problems)
    return syncs


def _problem(model: ModelRef, err: dict) -> Problem:
    loc = list(err["loc"])
    message = err["msg"]
    if err["type"] == "extra_forbidden" and loc:
        near = _nearest_key(str(loc[-1]), [str(p) for p in loc[:-1]])
        message = f"unknown key {loc[-1]!r}" + (f"; did you mean {near!r}?" if near else "")
    elif err["type"] == "literal_error":
        message = f"{message}, got {err.get('input')!r}"
        near = difflib.get_close_matches(str(err.get("input")), _literal_choices(err), n=1)
        if near:
            message += f"; did you mean {near[0]!r}?"
    elif err["type"] == "missing":
        message = "required key is missing"
    return Problem(model.name, model.yaml_path, key_path(loc), message)


def key_path(loc: list) -> str:
    """`["syncs", 0, "key", "column"]` -> `emarsys.syncs[0].key.column`."""
    path = "emarsys"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _literal_choices(err: dict) -> list[str]:
    expected = (err.get("ctx") or {}).get("expected", "")
    return [part.strip(" '\"") for part in expected.replace(" or ", ",").split(",") if part.strip()]


_KEYS_BY_LEVEL = {
    "syncs": set(SyncSpec.model_fields),
    "key": set(KeySpec.model_fields),
    "safety": set(SafetySpec.model_fields),
}


def _nearest_key(word: str, parents: list[str]) -> str | None:
    level = "syncs"
    for part in reversed(parents):
        if part in _KEYS_BY_LEVEL:
            level = part
            break
    if not parents:
        candidates = set(ModelSyncs.model_fields)
    else:
        candidates = _KEYS_BY_LEVEL[level]
    found = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return found[0] if found else None
