"""What an emulator starts with: credentials, API users, custom fields, settings, faults, seed data.

    EmulatorConfig(rate_limit=0, read_after_write_lag=2, faults=[{"type": "status", "status": 503}])
    EmulatorConfig.from_mapping(yaml.safe_load(open("emulator.yml")))     # what --config FILE does

Every field of `Settings` is a field here too (flat), so any setting is settable at start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .auth import ApiUser
from .faults import Fault
from .fields import custom_field
from .settings import Settings, non_default_fields, validate_setting

DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"
DEFAULT_USERNAME = "sandbox001"
DEFAULT_SECRET = "sandbox-wsse-secret"

SEED_KEYS = ("fields", "contacts", "lists", "users")


@dataclass
class EmulatorConfig(Settings):
    # The sandbox's two default API users (every permission, the default rate limit).
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    username: str = DEFAULT_USERNAME
    secret: str = DEFAULT_SECRET
    # Legacy way to pass email_case_sensitive / truncate_text; values differing from the defaults
    # override the flat settings.
    store_options: Settings | None = None
    custom_fields: list[dict] | None = None   # None = the default custom fields
    # Further API users: {"name", "secret", "scheme": "oauth"|"wsse", "permissions": [...],
    # "rate_limit": n}. Permissions None/absent = all.
    users: list[dict] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)   # pending at start (see faults.py)
    # Preloaded at start and again on every reset: {"fields", "contacts", "lists", "users"}.
    seed: dict | None = None

    def __post_init__(self) -> None:
        if self.store_options is not None:
            for name, value in non_default_fields(self.store_options).items():
                setattr(self, name, value)
        self.validate()

    def settings(self) -> Settings:
        return Settings(**{name: getattr(self, name) for name in Settings.names()})

    def validate(self) -> None:
        """Raise ValueError naming the first bad entry (settings, users, faults, fields, seed)."""
        for name in Settings.names():
            setattr(self, name, validate_setting(name, getattr(self, name)))
        for spec in self.custom_fields or []:
            custom_field(spec)
        for n, spec in enumerate(self.users):
            try:
                ApiUser.from_dict(spec)
            except ValueError as err:
                raise ValueError(f"users[{n}]: {err}") from None
        for n, spec in enumerate(self.faults):
            try:
                Fault.from_dict(spec)
            except ValueError as err:
                raise ValueError(f"faults[{n}]: {err}") from None
        if self.seed is not None and (not isinstance(self.seed, dict) or set(self.seed) - set(SEED_KEYS)):
            raise ValueError(f"'seed' must be an object with any of {', '.join(SEED_KEYS)}")

    @classmethod
    def from_mapping(cls, data: Any, source: str = "config") -> EmulatorConfig:
        """Build from a parsed config file: the fields above plus any setting, flat or under
        `settings:`. Raises ValueError naming the source and the bad key."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: the top level must be a mapping of option -> value")
        data = dict(data)
        nested = data.pop("settings", None) or {}
        if not isinstance(nested, dict):
            raise ValueError(f"{source}: 'settings' must be a mapping of setting -> value")
        known = {f.name for f in fields(cls)} - {"store_options"}
        unknown = sorted((set(data) | set(nested)) - known)
        if unknown:
            raise ValueError(f"{source}: unknown option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        try:
            return cls(**{**nested, **data})   # a top-level value (e.g. a CLI flag) wins
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None


def load_config_file(path: str | Path) -> dict:
    """Parse a YAML or JSON emulator config file into a mapping (JSON is YAML too)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the emulator config ({err.strerror})") from None
    import yaml

    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text) or {}
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid YAML/JSON: {err}") from None
