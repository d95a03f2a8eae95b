"""Sync declarations: `config.meta.emarsys` of a model -> validated `SyncSpec` objects.

Pure: no dbt, no HTTP. The input is the meta dbt put in the manifest plus where it came from, so every
problem names the model, the file, the key path and (when the file could be re-read) the line.

    emarsys:
      syncs:
        - name: shop_contacts
          object: contact                  # contact | contact_list
          behaviour: update_or_create      # update_or_create | update_only | mirror
          key: {column: email, field: email}
          fields: {first_name: first_name, optin: optin}   # column -> Emarsys field

Before validation each sync is completed from defaults, most specific first: the model's
`meta.emarsys_defaults` (usually set for a folder with `+meta` in dbt_project.yml), then the project's
`vars: {emarsys: {defaults: ...}}`. dbt merges meta shallowly (a model's `emarsys` replaces a folder's),
so the merge of nested keys happens here. Strings that still hold Jinja (dbt leaves `config(meta=...)`
strings of SQL files unrendered) are rendered with `env_var()` and `var()`, as dbt renders YAML.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Callable, Literal, Mapping, get_args, get_origin

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

SPEC_ROOT = "emarsys"                 # the meta key holding a model's syncs
DEFAULTS_META_KEY = "emarsys_defaults"  # a meta key holding defaults (folder-level `+meta`)
PROJECT_VAR = "emarsys"               # the dbt var holding project settings (`defaults`, `exposures`)


def _field_ref(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"an Emarsys field is an id (number), a string id or a name, got {_kind(value)}")
    if isinstance(value, str) and not value.strip():
        raise ValueError("an Emarsys field is an id (number), a string id or a name, got an empty string")
    return value


FieldRef = Annotated[int | str, BeforeValidator(_field_ref)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeySpec(_Strict):
    column: str = Field(min_length=1)
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
    constants: dict[FieldRef, Any] = Field(default_factory=dict)   # Emarsys field -> fixed value
    list: str | None = Field(None, min_length=1)                   # contact list name (mirror)
    null_policy: Literal["skip", "clear"] = "skip"
    normalize_email: bool = True
    truncate_text: bool = False
    timezone: str = "UTC"
    safety: SafetySpec = Field(default_factory=SafetySpec)
    enabled: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value.upper() == "UTC":
            return value
        zones = _time_zones()
        if value not in zones:
            near = difflib.get_close_matches(value, sorted(zones), n=1)
            raise ValueError(f"unknown time zone {value!r}" + (f"; did you mean {near[0]!r}?" if near else
                                                               " (an IANA name such as 'Europe/Berlin')"))
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SyncSpec":
        problems = cross_key_problems(self.object, self.behaviour, self.list, str(self.key.field))
        if problems:
            raise ValueError("; ".join(problems))
        return self


def cross_key_problems(object_: Any, behaviour: Any, list_name: Any, key_field: Any,
                       unknown: frozenset[str] = frozenset()) -> list[str]:
    """What doesn't fit together among object, behaviour, list and the key's field. `unknown` names the
    keys whose values are invalid themselves: the checks needing them are left out (their own errors
    say enough)."""
    problems = []

    def known(*names: str) -> bool:
        return not unknown.intersection(names)

    if known("object", "behaviour"):
        if object_ == "contact_list" and behaviour != "mirror":
            problems.append("a contact_list sync has behaviour 'mirror'")
        if behaviour == "mirror" and object_ != "contact_list":
            problems.append("behaviour 'mirror' needs object 'contact_list'")
    if known("object", "list"):
        if object_ == "contact_list" and not list_name:
            problems.append("a contact_list sync needs 'list': the name of the Emarsys contact list")
        if object_ == "contact" and list_name:
            problems.append("'list' is only for contact_list syncs (object: contact_list)")
    if known("key", "behaviour") and key_field in ("id", "uid") and behaviour != "update_only":
        problems.append("the Emarsys contact id can only be the key of an update_only sync "
                        "(Emarsys cannot create contacts keyed by id)")
    return problems


class ExposureOwner(_Strict):
    name: str | None = None
    email: str | None = None


class ExposureSettings(_Strict):
    owner: ExposureOwner = Field(default_factory=ExposureOwner)
    maturity: Literal["low", "medium", "high"] = "medium"
    url: str | None = None


class ProjectSettings(_Strict):
    """`vars: {emarsys: ...}` in dbt_project.yml (or `--vars`)."""

    defaults: dict[str, Any] = Field(default_factory=dict)
    exposures: ExposureSettings = Field(default_factory=ExposureSettings)


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones())


# -- where a declaration lives -----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A file holding (part of) a declaration, and the line of each key path in it when known.

    `prefix` is the key path of the value in that file's terms, e.g. `emarsys` for a model's meta,
    `vars.emarsys` for the project var."""

    path: str
    prefix: str = SPEC_ROOT
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, hash=False)
    # `env_var('NAME')` calls in the file's raw text of this value, with their lines: dbt renders YAML
    # before the manifest is written, so only the file still says which variables were read.
    env_vars: tuple[tuple[str, int], ...] = field(default=(), compare=False, hash=False)

    def line_of(self, key: str) -> int | None:
        """The line of `key`, else of its nearest parent that has one."""
        while key:
            if key in self.lines:
                return self.lines[key]
            cut = max(key.rfind("."), key.rfind("["))
            if cut <= 0:
                break
            key = key[:cut]
        return self.lines.get(key)


@dataclass(frozen=True)
class ModelRef:
    """The dbt node a sync reads, and where its declaration lives (for error messages)."""

    unique_id: str
    name: str
    relation_name: str | None
    yaml_path: str           # the file that declares the meta: the model's YAML, its SQL or dbt_project.yml
    materialized: str = "table"
    resource_type: str = "model"
    package_name: str | None = None
    version: str | None = None              # model versions: `ref('name', v=2)`
    database: str | None = None
    schema: str | None = None
    identifier: str | None = None           # the alias
    # Columns declared in the model's YAML: name -> data_type (None when not given).
    declared_columns: tuple[tuple[str, str | None], ...] = ()
    contract_enforced: bool = False

    @property
    def display_name(self) -> str:
        return f"{self.name}.v{self.version}" if self.version is not None else self.name

    @property
    def selector(self) -> str:
        """How dbt's --select names this node."""
        return self.display_name


@dataclass(frozen=True)
class Sync:
    spec: SyncSpec
    model: ModelRef
    # Where the sync is declared and its position in `syncs`, so later checks can point at its keys.
    source: Source | None = field(default=None, compare=False)
    index: int = field(default=0, compare=False)
    # False for a sync with problems, kept only so that its columns and fields can be checked too.
    complete: bool = field(default=True, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def key(self, path: str = "") -> str:
        """The key path of `path` in this sync, e.g. `emarsys.syncs[0].fields.birth_date`."""
        base = f"{SPEC_ROOT}.syncs[{self.index}]"
        return f"{base}.{path}" if path else base

    def problem(self, path: str, message: str) -> Problem:
        """A problem found after parsing (columns, types, Emarsys fields), placed like parse problems."""
        key = self.key(path)
        source = self.source or Source(self.model.yaml_path)
        return Problem(self.model.display_name, source.path, key, message, source.line_of(key))


@dataclass(frozen=True)
class Problem:
    model: str
    path: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        model = f"model {self.model}: " if self.model else ""
        return f"{where}: {model}{self.key}: {self.message}"

    def as_dict(self) -> dict:
        return {"model": self.model, "path": self.path, "line": self.line, "key": self.key,
                "message": self.message}


class SpecError(Exception):
    """Every problem found in the declarations, reported at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Declaration:
    """One model's raw `meta.emarsys`, its `meta.emarsys_defaults`, and where each was declared."""

    model: ModelRef
    meta: Any
    source: Source | None = None
    defaults: Any = None
    defaults_source: Source | None = None


@dataclass(frozen=True)
class ProjectDefaults:
    """The project var `emarsys` (validated), and where it was set."""

    settings: ProjectSettings = field(default_factory=ProjectSettings)
    source: Source = field(default_factory=lambda: Source("dbt_project.yml", "vars." + PROJECT_VAR))

    @property
    def defaults(self) -> dict[str, Any]:
        return self.settings.defaults

    @property
    def defaults_source(self) -> Source:
        return Source(self.source.path, self.source.prefix + ".defaults", self.source.lines)


Renderer = Callable[[str], Any]


# -- parsing ------------------------------------------------------------------------------------------


def parse_project_settings(raw: Any, source: Source, *,
                           secrets: list[tuple[str, str]] | None = None) -> tuple[ProjectDefaults, list[Problem]]:
    """Validate the project var `emarsys` (defaults are checked key by key against SyncSpec).

    `secrets`: (name, value) of the secret environment variables (default: from the environment).
    Every problem is reported; what is still usable (the defaults' valid keys) is kept, so the syncs
    can be checked too."""
    if raw is None:
        return ProjectDefaults(source=source), []
    secrets = secret_variables() if secrets is None else secrets
    found = _secrets_in(raw, source, secrets)
    problems = [_problem_at(source, "", key, msg) for key, msg in found]
    raw = _without(raw, _redactions(raw, source.prefix, secrets), source.prefix)
    try:
        settings = ProjectSettings.model_validate(raw)
    except ValidationError as exc:
        problems += [_problem_at(source, "", *_describe(err, ProjectSettings, source.prefix))
                     for err in exc.errors() if not _under_any(key_path(list(err["loc"]), source.prefix),
                                                              [key for key, _ in found])]
        defaults = raw.get("defaults") if isinstance(raw, dict) else None
        settings = ProjectSettings(defaults=defaults if isinstance(defaults, dict) else {})
    project = ProjectDefaults(settings, source)
    return project, problems + _defaults_problems(settings.defaults, project.defaults_source, "")


@dataclass
class Collected:
    """Every sync declared, every problem, and what can still be checked of the broken syncs."""

    syncs: list[Sync] = field(default_factory=list)        # valid, ready to run
    problems: list[Problem] = field(default_factory=list)
    # Syncs with problems that still parse once the broken keys are left out: their columns and
    # fields can be checked (validate reports everything at once), but they never run.
    incomplete: list[Sync] = field(default_factory=list)
    # Syncs too broken to check further, as notes saying so (placed like problems).
    unchecked: list[Problem] = field(default_factory=list)


def parse_model_meta(model: ModelRef, emarsys_meta: Any, *, source: Source | None = None,
                     defaults: Any = None, defaults_source: Source | None = None,
                     project: ProjectDefaults | None = None, render: Renderer | None = None,
                     secrets: list[tuple[str, str]] | None = None) -> tuple[list[Sync], list[Problem]]:
    """Validate one model's `meta.emarsys`; return its valid syncs and every problem found.

    `secrets`: (name, value) of the secret environment variables, whose values a declaration may not
    hold (default: those of the renderer's environment, else of this process)."""
    found = parse_model(model, emarsys_meta, source=source, defaults=defaults, defaults_source=defaults_source,
                        project=project, render=render, secrets=secrets)
    return found.syncs, found.problems


def parse_model(model: ModelRef, emarsys_meta: Any, *, source: Source | None = None,
                defaults: Any = None, defaults_source: Source | None = None,
                project: ProjectDefaults | None = None, render: Renderer | None = None,
                secrets: list[tuple[str, str]] | None = None) -> Collected:
    """`parse_model_meta`, keeping what can still be checked of the syncs that have problems.

    Nothing stops at the first problem: a misplaced credential, an unknown key or a bad default is
    reported and left out, and the rest is checked all the same."""
    source = source or Source(model.yaml_path)
    defaults_source = defaults_source or Source(model.yaml_path, DEFAULTS_META_KEY)
    where = model.display_name
    out = Collected()
    if secrets is None:
        secrets = secret_variables(getattr(render, "env", None))

    def report(src: Source, key: str, message: str) -> None:
        out.problems.append(_problem_at(src, where, key, message))

    # Credentials first, on the raw values: they are reported, then left out (a secret value is
    # replaced), so nothing below can echo them.
    secret_keys: list[str] = []
    for src, value in ((source, emarsys_meta), (defaults_source, defaults)):
        for key, message in _secrets_in(value, src, secrets):
            report(src, key, message)
            secret_keys.append(key)
    emarsys_meta = _without(emarsys_meta, _redactions(emarsys_meta, source.prefix, secrets), source.prefix)
    defaults = _without(defaults, _redactions(defaults, defaults_source.prefix, secrets), defaults_source.prefix)

    if not isinstance(emarsys_meta, dict):
        report(source, SPEC_ROOT, f"expected a mapping with a list of `syncs`, got {_kind(emarsys_meta)}")
        return out
    if "syncs" not in emarsys_meta and set(emarsys_meta) & set(SyncSpec.model_fields):
        report(source, SPEC_ROOT, "a model's syncs go in a list under `syncs`: "
                                  "`emarsys: {syncs: [{name: ..., key: ...}]}`")
        return out
    for key in emarsys_meta:
        if key != "syncs":
            report(source, f"{SPEC_ROOT}.{key}", f"unknown key {key!r}" + _did_you_mean(str(key), ["syncs"]))
    syncs_raw = emarsys_meta.get("syncs")
    if syncs_raw is None:
        if not out.problems:
            report(source, f"{SPEC_ROOT}.syncs", "required key is missing")
        return out
    if not isinstance(syncs_raw, list):
        report(source, f"{SPEC_ROOT}.syncs", f"expected a list of syncs, got {_kind(syncs_raw)}")
        return out
    if not syncs_raw:
        report(source, f"{SPEC_ROOT}.syncs", "should have at least 1 sync")
        return out

    model_defaults: dict = {}
    if isinstance(defaults, dict):
        out.problems += _defaults_problems(defaults, defaults_source, where)
        model_defaults = _usable_defaults(defaults)
    elif defaults is not None:
        report(defaults_source, DEFAULTS_META_KEY, f"expected a mapping of sync defaults, got {_kind(defaults)}")
    layers = [(model_defaults, defaults_source),
              ((_usable_defaults(project.defaults), project.defaults_source) if project else ({}, None))]

    for index, raw in enumerate(syncs_raw):
        prefix = f"{SPEC_ROOT}.syncs[{index}]"
        if not isinstance(raw, dict):
            report(source, prefix, f"expected a mapping, got {_kind(raw)}")
            continue
        own: list[Problem] = []
        # Keys already reported (a credential, a failed rendering): their validation errors would
        # only repeat the problem, or echo what was left out.
        reported = [key for key in secret_keys if _under_any(key, [prefix])]
        merged = raw
        for layer, _ in layers:
            merged = deep_merge(layer, merged)
        merged, render_problems = _render_all(merged, render)
        for loc, message in render_problems:
            own.append(_located(loc, message, raw, layers, source, prefix, where))
            reported.append(key_path(loc, prefix))
        # What Jinja rendered here (SQL config strings, defaults) may hold a secret's value too.
        for loc, name in _secret_values(merged, [], secrets):
            own.append(_located(loc, _secret_value_message(name), raw, layers, source, prefix, where))
            reported.append(key_path(loc, prefix))
        merged = _without(merged, _redactions(merged, prefix, secrets), prefix)
        spec, errors = _validate(merged)
        for err in errors:
            loc = list(err["loc"])
            if not _under_any(key_path(loc, prefix), reported):
                own.append(_located(loc, None, raw, layers, source, prefix, where, err))
        out.problems += own
        if spec is not None and not own and not reported:
            out.syncs.append(Sync(spec, model, source, index))
            continue
        best = spec or _best_effort(merged, errors)
        if best is not None:
            out.incomplete.append(Sync(best, model, source, index, complete=False))
        else:
            name = raw.get("name") if isinstance(raw.get("name"), str) else f"syncs[{index}]"
            out.unchecked.append(_problem_at(source, where, prefix,
                                             f"column and field checks skipped for sync {name} until its "
                                             "declaration is fixed"))
    return out


def parse_declarations(models: list, *, project: ProjectDefaults | None = None,
                       render: Renderer | None = None, secrets: list[tuple[str, str]] | None = None) -> list[Sync]:
    """All syncs of a project; raises SpecError listing every problem (including duplicate names).

    `models` holds `Declaration`s, or `(ModelRef, meta)` pairs."""
    syncs, problems = collect_declarations(models, project=project, render=render, secrets=secrets)
    if problems:
        raise SpecError(problems)
    return syncs


def collect_declarations(models: list, *, project: ProjectDefaults | None = None,
                         render: Renderer | None = None,
                         secrets: list[tuple[str, str]] | None = None) -> tuple[list[Sync], list[Problem]]:
    """Like `parse_declarations`, but returns the problems instead of raising."""
    found = collect(models, project=project, render=render, secrets=secrets)
    return found.syncs, found.problems


def collect(models: list, *, project: ProjectDefaults | None = None, render: Renderer | None = None,
            secrets: list[tuple[str, str]] | None = None) -> Collected:
    """Every sync of every model, every problem (duplicate names included, broken syncs' too), and
    what can still be checked of the broken syncs."""
    out = Collected()
    if secrets is None:
        secrets = secret_variables(getattr(render, "env", None))
    for item in models:
        decl = item if isinstance(item, Declaration) else Declaration(item[0], item[1])
        found = parse_model(decl.model, decl.meta, source=decl.source, defaults=decl.defaults,
                            defaults_source=decl.defaults_source, project=project, render=render,
                            secrets=secrets)
        out.syncs += found.syncs
        out.problems += found.problems
        out.incomplete += found.incomplete
        out.unchecked += found.unchecked
    in_order = sorted(out.syncs + out.incomplete, key=lambda s: (s.model.unique_id, s.index))
    seen: dict[str, Sync] = {}
    for sync in in_order:
        if sync.name.startswith(_UNNAMED):
            continue
        if sync.name in seen:
            other = seen[sync.name].model
            hint = ""
            if other.name == sync.model.name and other.version != sync.model.version:
                # dbt gives every version the model-level config (and appends version-level syncs).
                hint = ("; a declaration at the model level applies to every version of a versioned "
                        "model: declare the sync under the version that should sync "
                        "(`versions: [{v: 2, config: {meta: {emarsys: ...}}}]`)")
            out.problems.append(sync.problem("name", f"the sync name {sync.name!r} is also used by model "
                                                     f"{other.display_name} ({other.yaml_path}); sync names "
                                                     f"must be unique{hint}"))
        seen[sync.name] = sync
    # Two mirrors of one list undo each other: each removes the members only the other's model holds,
    # and its state keeps them as members, so they never come back. Names compared as Emarsys might
    # (trimmed, any case): the safer reading.
    lists: dict[str, Sync] = {}
    for sync in in_order:
        if sync.spec.object != "contact_list" or not sync.spec.list or not sync.spec.enabled:
            continue
        name = sync.spec.list.strip().casefold()
        if name in lists:
            other = lists[name]
            out.problems.append(sync.problem("list", f"list {sync.spec.list!r} is also mirrored by sync "
                                                     f"{other.name} (model {other.model.display_name}): each "
                                                     "would remove the other's members; give each mirror a list "
                                                     "of its own"))
        else:
            lists[name] = sync
    out.problems = _unique(out.problems)
    return out


# A sync whose name is invalid is still checked, under this placeholder (never reported as a name).
_UNNAMED = "_unnamed_sync_"


def _validate(merged: dict) -> tuple[SyncSpec | None, list[dict]]:
    try:
        return SyncSpec.model_validate(merged), []
    except ValidationError as exc:
        errors = exc.errors()
    # pydantic checks how keys fit together only once every key is valid: check it here on the keys
    # that are, so that a typo elsewhere doesn't hide a missing `list`.
    problems = [] if any(not err["loc"] for err in errors) else cross_key_problems(*_cross_keys(merged, errors))
    if problems:
        errors.append({"loc": (), "msg": "; ".join(problems), "type": "value_error", "input": merged})
    return None, errors


def _cross_keys(merged: dict, errors: list[dict]) -> tuple:
    """object, behaviour, list and the key's field as declared (or their defaults), and which of them
    are invalid themselves (`cross_key_problems`'s `unknown`)."""
    broken = {str(err["loc"][0]) for err in errors if err["loc"]}
    unknown = {name for name in ("object", "behaviour", "list", "key") if name in broken}
    fields = SyncSpec.model_fields
    key = merged.get("key")
    if not isinstance(key, dict):
        unknown.add("key")
        key = {}
    return (merged.get("object", fields["object"].default), merged.get("behaviour", fields["behaviour"].default),
            merged.get("list"), str(key.get("field", KeySpec.model_fields["field"].default)), frozenset(unknown))


def _best_effort(merged: dict, errors: list[dict]) -> SyncSpec | None:
    """The sync with its broken keys left out (defaults take their place), for the checks that don't
    depend on them: a typo in `behaviour` shouldn't hide a missing column. None when what is left
    can't be checked (e.g. the key is missing)."""
    trimmed = copy.deepcopy(merged)
    for _ in range(3):
        for err in errors:
            loc = list(err["loc"])
            if not loc:        # the sync as a whole (object, behaviour and list don't fit together)
                for name in ("object", "behaviour", "list"):
                    trimmed.pop(name, None)
            elif loc[0] == "name":
                trimmed["name"] = _UNNAMED + str(id(trimmed))
            elif len(loc) >= 2 and loc[0] in ("fields", "constants", "key", "safety") and \
                    isinstance(trimmed.get(loc[0]), dict) and loc[1:] != ["column"]:
                trimmed[loc[0]].pop(loc[1], None)
            else:
                trimmed.pop(loc[0], None)
        spec, errors = _validate(trimmed)
        if spec is not None:
            return spec
    return None


def _usable_defaults(defaults: dict) -> dict:
    """Defaults without the keys reported as unusable (unknown keys, `name`)."""
    return {k: v for k, v in defaults.items() if k in SyncSpec.model_fields and k != "name"}


def _under_any(key: str, paths: list[str]) -> bool:
    """`key` is one of `paths` or inside one of them."""
    return any(key == p or key.startswith(p + ".") or key.startswith(p + "[") for p in paths)


# What a secret value is replaced with once reported, so that nothing later can echo it.
REDACTED = "<secret>"


def _without(value: Any, keys: list[str], prefix: str) -> Any:
    """`value` with what is at the key paths `keys` (paths under `prefix`) left out: a key named like a
    credential is dropped, anything else is replaced by REDACTED."""
    if not keys:
        return value

    def walk(current: Any, path: str) -> Any:
        if path in keys:
            return REDACTED
        if isinstance(current, dict):
            return {k: walk(v, f"{path}.{k}") for k, v in current.items()
                    if not (f"{path}.{k}" in keys and isinstance(k, str) and _SECRET_NAME.search(_normalise(k)))}
        if isinstance(current, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(current)]
        return current

    return walk(value, prefix)


def _redactions(value: Any, prefix: str, secrets: list[tuple[str, str]]) -> list[str]:
    """Key paths to leave out of a declaration: credential keys and values holding a secret."""
    return [key for key, _ in _secret_keys(value, prefix)] + \
        [key_path(loc, prefix) for loc, _ in _secret_values(value, [], secrets)]


def deep_merge(base: Any, override: Any) -> Any:
    """`override` on top of `base`: mappings merge key by key, anything else (lists too) replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


# -- Jinja --------------------------------------------------------------------------------------------


class RenderError(ValueError):
    pass


class JinjaRenderer:
    """Renders `{{ ... }}` in declaration strings like dbt renders YAML: `env_var(name, default)`,
    `var(name, default)` (project vars, `--vars` on top) and `target` (name, type, schema, database).

    Native types, as dbt: `"{{ var('on', true) }}"` becomes `True`. Secret environment variables
    (`DBT_ENV_SECRET_*`, and any whose name says secret, password or token) are refused: a declaration
    is written into manifest.json and the run artifacts."""

    def __init__(self, vars: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                 target: Mapping[str, Any] | None = None):
        import os

        from jinja2 import StrictUndefined
        from jinja2.nativetypes import NativeEnvironment
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class _Environment(ImmutableSandboxedEnvironment, NativeEnvironment):
            """Native types (as dbt renders YAML), in a sandbox (a declaration is data, not code)."""

        self.vars = dict(vars or {})
        self.env = dict(os.environ if env is None else env)
        self.target = dict(target or {})
        self._jinja = _Environment(undefined=StrictUndefined)

    def __call__(self, text: str) -> Any:
        from jinja2 import TemplateError, Undefined

        try:
            value = self._jinja.from_string(text).render(env_var=self._env_var, var=self._var,
                                                         target=self.target)
        except RenderError:
            raise
        except TemplateError as exc:
            raise RenderError(str(exc)) from None
        if isinstance(value, Undefined):
            raise RenderError("the expression is undefined (only env_var(), var() and target are available)")
        return value

    def _env_var(self, name: str, default: Any = None) -> Any:
        if is_secret_variable(name):
            raise RenderError(_secret_variable_message(name))
        if name in self.env:
            return self.env[name]
        if default is not None:
            return default
        raise RenderError(f"Env var required but not provided: {name!r}")

    def _var(self, name: str, default: Any = ...) -> Any:
        if name in self.vars:
            return self.vars[name]
        if default is not ...:
            return default
        raise RenderError(f"Required var {name!r} not found in the project's vars or --vars")


def _render_all(value: Any, render: Renderer | None, loc: tuple = ()) -> tuple[Any, list[tuple[list, str]]]:
    if isinstance(value, dict):
        out, problems = {}, []
        for key, item in value.items():
            out[key], found = _render_all(item, render, (*loc, key))
            problems += found
        return out, problems
    if isinstance(value, list):
        out_list, problems = [], []
        for index, item in enumerate(value):
            rendered, found = _render_all(item, render, (*loc, index))
            out_list.append(rendered)
            problems += found
        return out_list, problems
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        if render is None:
            render = JinjaRenderer()
        try:
            return render(value), []
        except Exception as exc:  # noqa: BLE001 - any rendering failure is a problem of this key
            return value, [(list(loc), f"could not render {value!r}: {_one_line(exc)}")]
    return value, []


# -- secrets ------------------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"(^|_)(secret|password|passwd|pwd|token|api_?key|private_?key|credentials?|"
                          r"client_?secret|auth)($|_)")
# Mappings whose keys are data (column names, Emarsys fields), not settings.
_DATA_MAPPINGS = {"fields", "constants"}


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower())


# Secret values shorter than this are not looked for in declarations: too many ordinary words match.
MIN_SECRET_LENGTH = 6


def is_secret_variable(name: str) -> bool:
    """An environment variable whose value must never reach a declaration: dbt's `DBT_ENV_SECRET_*`,
    and any whose name says secret, password, token, key, credentials or auth (EMARSYS_CLIENT_SECRET,
    EMARSYS_SECRET, DBT_CLOUD_API_TOKEN, DBT_CLOUD_WEBHOOK_SECRET...). Endpoints (`*_URL`, `*_URI`)
    such as EMARSYS_AUTH_URL are addresses, not secrets."""
    normalised = _normalise(name)
    if name.startswith("DBT_ENV_SECRET"):
        return True
    return bool(_SECRET_NAME.search(normalised)) and not normalised.endswith(("_url", "_uri"))


def secret_variables(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(name, value) of the secret environment variables whose values are long enough to look for."""
    import os

    env = os.environ if env is None else env
    return sorted((name, value) for name, value in env.items()
                  if is_secret_variable(name) and isinstance(value, str) and len(value.strip()) >= MIN_SECRET_LENGTH)


def _secret_variable_message(name: str) -> str:
    return (f"env_var({name!r}): secret environment variables can't be used in a declaration (dbt writes "
            "declarations into manifest.json)")


def _secret_value_message(name: str) -> str:
    return (f"holds the value of the secret environment variable {name}: secrets can't be used in a "
            "declaration (dbt renders env_var() in YAML and writes the result into manifest.json and the "
            "docs); the runner reads credentials from the environment itself")


def _secrets_in(value: Any, source: Source, secrets: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(key path, message) for every credential in a raw declaration: keys named like credentials,
    values holding a secret environment variable's value (dbt rendered YAML before we see it), and
    `env_var()` of a secret variable in the file's raw text. No message repeats a value."""
    found = _secret_keys(value, source.prefix)
    by_line = {line: key for key, line in sorted(source.lines.items(), key=lambda item: len(item[0]))}
    for name, line in source.env_vars:
        if is_secret_variable(name):
            found.append((by_line.get(line, source.prefix), _secret_variable_message(name)))
    found += [(key_path(loc, source.prefix), _secret_value_message(name))
              for loc, name in _secret_values(value, [], secrets)]
    flagged: set[str] = set()
    unique = []
    for key, message in found:
        if key not in flagged:     # one problem a key, however many ways it gives the secret away
            flagged.add(key)
            unique.append((key, message))
    return unique


def _secret_values(value: Any, loc: list, secrets: list[tuple[str, str]]) -> list[tuple[list, str]]:
    """(location, variable name) of every key or value holding a secret variable's value."""
    if not secrets:
        return []
    found: list[tuple[list, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            name = _holds_secret(key, secrets)
            if name:
                found.append((loc, name))       # placed at the mapping: the key itself is the secret
            found += _secret_values(item, [*loc, key], secrets)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _secret_values(item, [*loc, index], secrets)
    else:
        name = _holds_secret(value, secrets)
        if name:
            found.append((loc, name))
    return found


def _holds_secret(value: Any, secrets: list[tuple[str, str]]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value)
    for name, secret in secrets:
        if secret.strip() in text:
            return name
    return None


def _secret_keys(value: Any, path: str) -> list[tuple[str, str]]:
    """Keys that look like credentials, anywhere in a declaration; the value is never repeated."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            key_path = f"{path}.{key}"
            if isinstance(key, str) and _SECRET_NAME.search(_normalise(key)):
                found.append((key_path, "looks like a credential: credentials are never read from dbt "
                              "config (dbt writes meta and vars into manifest.json and the docs); set "
                              "EMARSYS_CLIENT_ID and EMARSYS_CLIENT_SECRET (or EMARSYS_USERNAME and "
                              "EMARSYS_SECRET) in the environment instead"))
            elif key not in _DATA_MAPPINGS:
                found += _secret_keys(item, key_path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _secret_keys(item, f"{path}[{index}]")
    return found


# -- problems -----------------------------------------------------------------------------------------


def _defaults_problems(defaults: dict, source: Source, where: str) -> list[Problem]:
    """Defaults may set any sync key but `name`; unknown keys are reported where they are written."""
    problems = []
    for key in defaults:
        if key == "name":
            problems.append(_problem_at(source, where, f"{source.prefix}.name",
                                        "a default can't set the sync's name (names are unique)"))
        elif key not in SyncSpec.model_fields:
            problems.append(_problem_at(source, where, f"{source.prefix}.{key}",
                                        f"unknown key {key!r}"
                                        + _did_you_mean(str(key), SyncSpec.model_fields)))
    return problems


def _located(loc: list, message: str | None, raw: dict, layers: list, source: Source, prefix: str,
             where: str, err: dict | None = None) -> Problem:
    """A problem at `loc` of a merged sync, attributed to the declaration or the default that set it."""
    origin, origin_prefix = source, prefix
    if loc and not _has_path(raw, loc):
        for layer, layer_source in layers:
            if layer_source is not None and _has_path(layer, loc):
                origin, origin_prefix = layer_source, layer_source.prefix
                break
    if err is not None:
        key, message = _describe(err, SyncSpec, origin_prefix)
    else:
        key = key_path(loc, origin_prefix)
    if origin_prefix.startswith("vars."):
        where = ""     # a project-wide default: not one model's problem
    return _problem_at(origin, where, key, message or "")


def _problem_at(source: Source, where: str, key: str, message: str) -> Problem:
    return Problem(where, source.path, key, message, source.line_of(key))


def _describe(err: dict, root: type[BaseModel], prefix: str) -> tuple[str, str]:
    """A pydantic error -> (key path, message with a did-you-mean where one helps)."""
    loc = list(err["loc"])
    message = err["msg"]
    kind = err["type"]
    if kind == "extra_forbidden" and loc:
        candidates = list(_model_at(root, loc[:-1]).model_fields)
        message = f"unknown key {loc[-1]!r}" + _did_you_mean(str(loc[-1]), candidates)
    elif kind == "literal_error":
        choices = _literal_choices(err)
        message = f"expected one of {', '.join(repr(c) for c in choices)}, got {err.get('input')!r}"
        message += _did_you_mean(str(err.get("input")), choices)
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
        message = (f"{err.get('input')!r} is not a valid sync name: use letters, digits and '_', "
                   "starting with a letter or '_'")
    elif kind in ("value_error", "assertion_error"):
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        message = f"expected a mapping, got {_kind(err.get('input'))}"
        if loc == ["key"]:
            message += " (write `key: {column: <the model's key column>}`)"
    elif kind in _RANGE_ERRORS and loc:
        message = f"{_short_path(loc)} must be {_range_text(root, loc)}, got {_shown(err.get('input'))}"
    elif kind in ("bool_type", "bool_parsing"):
        message = f"{_short_path(loc)} must be true or false, got {_shown(err.get('input'))}"
    elif kind in ("int_type", "int_parsing", "float_type", "float_parsing", "int_from_float"):
        message = f"{_short_path(loc)} must be a number, got {_shown(err.get('input'))}"
    elif kind == "string_type":
        message = f"{_short_path(loc)} must be text, got {_kind(err.get('input'))}"
    elif kind == "string_too_short":
        message = f"{_short_path(loc)} must not be empty"
    elif kind == "string_too_long":
        limit = (err.get("ctx") or {}).get("max_length")
        message = f"{_short_path(loc)} must be at most {limit} characters long"
    elif kind == "list_type":
        message = f"expected a list, got {_kind(err.get('input'))}"
    return key_path(loc, prefix), message


_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _short_path(loc: list) -> str:
    """The key in the sync's own terms, e.g. `safety.max_removal_share`."""
    return key_path(loc, "").lstrip(".")


def _range_text(root: type[BaseModel], loc: list) -> str:
    """`between 0 and 1`, `at least 1`...: the bounds declared on the field at `loc`."""
    info = _model_at(root, loc[:-1]).model_fields.get(str(loc[-1]))
    bounds = {}
    for constraint in getattr(info, "metadata", []):
        for name in ("ge", "gt", "le", "lt"):
            if getattr(constraint, name, None) is not None:
                bounds[name] = getattr(constraint, name)
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if "ge" in bounds and "le" in bounds:
        return f"between {_number(low)} and {_number(high)}"
    parts = []
    if low is not None:
        parts.append(f"{'at least' if 'ge' in bounds else 'more than'} {_number(low)}")
    if high is not None:
        parts.append(f"{'at most' if 'le' in bounds else 'less than'} {_number(high)}")
    return " and ".join(parts) or "in range"


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _shown(value: Any) -> str:
    """A value for a message: numbers as written, text quoted and cut short."""
    if isinstance(value, bool) or value is None:
        return _kind(value)
    if isinstance(value, (int, float)):
        return _number(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def _model_at(root: type[BaseModel], loc: list) -> type[BaseModel]:
    """The pydantic model that validates the mapping at `loc` (for the names it accepts)."""
    cls = root
    for part in loc:
        if isinstance(part, int):
            continue
        info = cls.model_fields.get(str(part))
        sub = _submodel(info.annotation) if info is not None else None
        if sub is None:
            break
        cls = sub
    return cls


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _submodel(arg)
            if found is not None:
                return found
    return None


def key_path(loc: list, prefix: str = SPEC_ROOT) -> str:
    """`["syncs", 0, "key", "column"]` -> `emarsys.syncs[0].key.column`."""
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _has_path(value: Any, loc: list) -> bool:
    for part in loc:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return False
    return True


def _literal_choices(err: dict) -> list[str]:
    expected = (err.get("ctx") or {}).get("expected", "")
    return [part.strip(" '\"") for part in expected.replace(" or ", ",").split(",") if part.strip()]


def _did_you_mean(word: str, candidates) -> str:
    found = difflib.get_close_matches(word, sorted(str(c) for c in candidates), n=1, cutoff=0.6)
    return f"; did you mean {found[0]!r}?" if found else ""


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _unique(problems: list[Problem]) -> list[Problem]:
    """A default set once for many models is reported once."""
    seen: set[tuple] = set()
    out = []
    for p in problems:
        ident = (p.path, p.line, p.key, p.message) if not p.key.startswith(SPEC_ROOT + ".") else \
            (p.model, p.path, p.line, p.key, p.message)
        if ident not in seen:
            seen.add(ident)
            out.append(p)
    return out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
