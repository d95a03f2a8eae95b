"""The dbt project: its manifest, the models that declare syncs, selection, and its adapter.

This package is the only one that imports dbt. The order of calls matters: every `dbtRunner.invoke`
resets dbt's adapters, so all dbt commands (parse, ls) run first and the adapter is registered after.
"""

from __future__ import annotations

import json
import os
from argparse import Namespace
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError
from ..spec import ModelRef

SKIP_DIRS = {"target", "dbt_packages", "logs", ".venv", "venv", ".git", "__pycache__", "dbt_modules"}
PROJECT_FILE_SUFFIXES = {".sql", ".yml", ".yaml", ".csv", ".py", ".md"}


@dataclass(frozen=True)
class DbtArgs:
    """dbt's own flags, with dbt's defaults and environment variables."""

    project_dir: str | None = None
    profiles_dir: str | None = None
    target: str | None = None
    profile: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None

    def resolved_project_dir(self) -> Path:
        return Path(self.project_dir or os.environ.get("DBT_PROJECT_DIR") or ".").resolve()

    def resolved_profiles_dir(self) -> Path:
        explicit = self.profiles_dir or os.environ.get("DBT_PROFILES_DIR")
        if explicit:
            return Path(explicit).resolve()
        project = self.resolved_project_dir()
        return project if (project / "profiles.yml").exists() else Path.home() / ".dbt"

    def resolved_target(self) -> str | None:
        return self.target or os.environ.get("DBT_TARGET") or None

    def cli_flags(self) -> list[str]:
        flags = ["--project-dir", str(self.resolved_project_dir()),
                 "--profiles-dir", str(self.resolved_profiles_dir())]
        if self.resolved_target():
            flags += ["--target", self.resolved_target()]
        if self.profile:
            flags += ["--profile", self.profile]
        if self.vars:
            flags += ["--vars", json.dumps(self.vars)]
        return flags


@dataclass
class DbtProject:
    args: DbtArgs
    manifest: Any = None          # dbt.contracts.graph.manifest.Manifest
    _adapter: Any = None
    _config: Any = None

    @property
    def project_dir(self) -> Path:
        return self.args.resolved_project_dir()

    @property
    def target_dir(self) -> Path:
        return self.project_dir / "target"

    # -- manifest -----------------------------------------------------------------------------

    def load(self) -> "DbtProject":
        """Load target/manifest.json, or parse the project in-process when it is missing or stale."""
        if not (self.project_dir / "dbt_project.yml").exists():
            raise ConfigError(f"no dbt project at {self.project_dir} (dbt_project.yml not found); "
                              "pass --project-dir")
        _set_dbt_flags(self.args)
        manifest_path = self.target_dir / "manifest.json"
        if manifest_path.exists() and not self.args.vars and not _is_stale(self.project_dir, manifest_path):
            self.manifest = _read_manifest(manifest_path)
        else:
            self.manifest = self._parse()
        return self

    def _parse(self) -> Any:
        from dbt.cli.main import dbtRunner

        result = dbtRunner().invoke(["parse", *self.args.cli_flags(), "--quiet"])
        if not result.success:
            raise ConfigError(f"dbt parse failed for {self.project_dir}: {result.exception}")
        return result.result

    def sync_models(self, selected: set[str] | None = None) -> list[tuple[ModelRef, Any]]:
        """Models whose config.meta has an `emarsys` key, with that value; disabled models are absent."""
        found = []
        for uid, node in self.manifest.nodes.items():
            if node.resource_type.value not in ("model", "snapshot", "seed"):
                continue
            meta = (node.config.meta or {}) if node.config else {}
            if "emarsys" not in meta:
                continue
            if selected is not None and uid not in selected:
                continue
            found.append((model_ref(node), meta["emarsys"]))
        return sorted(found, key=lambda item: item[0].unique_id)

    def select(self, select: tuple[str, ...], exclude: tuple[str, ...]) -> set[str] | None:
        """The unique ids dbt's own selector engine picks, or None when nothing narrows the choice."""
        if not select and not exclude:
            return None
        from dbt.cli.main import dbtRunner

        cmd = ["ls", *self.args.cli_flags(), "--output", "json", "--output-keys", "unique_id",
               "--log-level", "none"]
        if select:
            cmd += ["--select", *select]
        if exclude:
            cmd += ["--exclude", *exclude]
        result = dbtRunner(manifest=self.manifest).invoke(cmd)
        if not result.success:
            raise ConfigError(f"dbt could not apply the selection: {result.exception}")
        return {json.loads(line)["unique_id"] for line in result.result or []}

    # -- adapter ------------------------------------------------------------------------------

    def adapter(self) -> Any:
        """The project's dbt adapter for its profile and target, with macros available."""
        if self._adapter is not None:
            return self._adapter
        from dbt.adapters.factory import get_adapter, register_adapter
        from dbt.config.runtime import RuntimeConfig
        from dbt.context.providers import generate_runtime_macro_context
        from dbt.mp_context import get_mp_context
        from dbt_common.events.base_types import EventLevel

        namespace = _namespace(self.args)
        try:
            config = RuntimeConfig.from_args(namespace)
        except Exception as exc:  # dbt raises several profile/project error types
            raise ConfigError(f"dbt could not load the profile: {_one_line(exc)}") from None
        register_adapter(config, get_mp_context(), adapter_registered_log_level=EventLevel.DEBUG)
        adapter = get_adapter(config)
        adapter.set_macro_resolver(self.manifest)
        adapter.set_macro_context_generator(generate_runtime_macro_context)
        self._adapter, self._config = adapter, config
        return adapter

    @contextmanager
    def connection(self, name: str = "emarsys-sync") -> Iterator[Any]:
        adapter = self.adapter()
        with adapter.connection_named(name):
            yield adapter

    @property
    def threads(self) -> int:
        if self.args.threads:
            return self.args.threads
        self.adapter()
        return int(getattr(self._config, "threads", 1) or 1)


def model_ref(node: Any) -> ModelRef:
    patch = node.patch_path.split("://", 1)[-1] if getattr(node, "patch_path", None) else None
    return ModelRef(
        unique_id=node.unique_id,
        name=node.name,
        relation_name=node.relation_name,
        yaml_path=patch or node.original_file_path,
        materialized=node.config.materialized,
    )


def _namespace(args: DbtArgs) -> Namespace:
    return Namespace(
        project_dir=str(args.resolved_project_dir()),
        profiles_dir=str(args.resolved_profiles_dir()),
        target=args.resolved_target(),
        profile=args.profile,
        vars=args.vars or {},
        threads=args.threads,
    )


def _set_dbt_flags(args: DbtArgs) -> None:
    """dbt reads global flags and an invocation context when used as a library (dbt-notes.md §2)."""
    from dbt.flags import set_from_args
    from dbt_common.context import set_invocation_context

    set_invocation_context(dict(os.environ))
    set_from_args(_namespace(args), {})


def _read_manifest(path: Path) -> Any:
    from dbt.artifacts.schemas.manifest import WritableManifest
    from dbt.contracts.graph.manifest import Manifest

    try:
        return Manifest.from_writable_manifest(WritableManifest.read_and_check_versions(str(path)))
    except Exception as exc:
        raise ConfigError(f"could not read {path}: {_one_line(exc)}; run `dbt parse`") from None


def _is_stale(project_dir: Path, manifest_path: Path) -> bool:
    """True when a project file changed after the manifest was written."""
    written = manifest_path.stat().st_mtime
    for root, dirs, files in os.walk(project_dir):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if Path(name).suffix in PROJECT_FILE_SUFFIXES and (Path(root) / name).stat().st_mtime > written:
                return True
    return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__


def dbt_version() -> str:
    from importlib.metadata import version

    return version("dbt-core")
