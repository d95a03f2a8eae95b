"""The dbt project: its manifest, the models that declare syncs, selection, and its adapter.

This package is the only one that imports dbt. The order of calls matters: every `dbtRunner.invoke`
resets dbt's adapters, so all dbt commands (parse, ls) run first and the adapter is registered after
(a later invoke drops the cached adapter, and the next `adapter()` registers it again).

Which manifest: with `artifacts_dir` (artifacts of a build made elsewhere, e.g. dbt Cloud) its
manifest.json, as is. Otherwise `target/manifest.json` when it was written by the build that wrote
`run_results.json`, for the same target, profile and vars, and no project file changed since; else an
in-process `dbt parse` (partial parsing keeps it around a second), which leaves the build's artifacts
in place.
"""

from __future__ import annotations

import json
import logging
import os
from argparse import Namespace
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError
from ..spec import (DEFAULTS_META_KEY, PROJECT_VAR, SPEC_ROOT, Collected, Declaration, JinjaRenderer,
                    ModelRef, Problem, ProjectDefaults, Source, SpecError, Sync, collect, parse_project_settings)
from . import locate

log = logging.getLogger(__name__)

SKIP_DIRS = {"target", "dbt_packages", "logs", ".venv", "venv", ".git", "__pycache__", "dbt_modules"}
PROJECT_FILE_SUFFIXES = {".sql", ".yml", ".yaml", ".csv", ".py", ".md"}
SYNCABLE_TYPES = ("model", "snapshot", "seed")


@dataclass(frozen=True)
class DbtArgs:
    """dbt's own flags, with dbt's defaults and environment variables."""

    project_dir: str | None = None
    profiles_dir: str | None = None
    target: str | None = None
    profile: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    selector: str | None = None        # a selector of selectors.yml
    state: str | None = None           # a directory of artifacts for state:/result: selection

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

    def resolved_state(self) -> Path | None:
        state = self.state or os.environ.get("DBT_STATE")
        return Path(state).resolve() if state else None

    def cli_flags(self) -> list[str]:
        # dbt's anonymous usage tracking would call dbt Labs' collector from inside our process on
        # every in-process command: the runner talks to the warehouse and Emarsys only.
        flags = ["--project-dir", str(self.resolved_project_dir()),
                 "--profiles-dir", str(self.resolved_profiles_dir()), "--no-send-anonymous-usage-stats"]
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
    artifacts_dir: str | None = None   # manifest.json and run_results.json of a build made elsewhere
    manifest: Any = None               # dbt.contracts.graph.manifest.Manifest
    config: Any = None                 # dbt.config.runtime.RuntimeConfig
    manifest_origin: str = ""          # where the manifest came from, for messages
    _adapter: Any = None
    _warned: set[str] = field(default_factory=set)   # misplaced declarations already warned of

    @property
    def project_dir(self) -> Path:
        return self.args.resolved_project_dir()

    @property
    def target_dir(self) -> Path:
        """dbt's target path (`target-path` in dbt_project.yml, DBT_TARGET_PATH), where we write too."""
        if self.config is not None:
            return Path(self.config.project_target_path)
        return self.project_dir / (os.environ.get("DBT_TARGET_PATH") or "target")

    @property
    def artifacts_path(self) -> Path:
        """Where the last build's manifest.json and run_results.json are read."""
        return Path(self.artifacts_dir).resolve() if self.artifacts_dir else self.target_dir

    @property
    def target_name(self) -> str | None:
        return getattr(self.config, "target_name", None)

    def default_target_name(self) -> str | None:
        """The profile's default target (`target:` in profiles.yml), rendered as dbt renders it."""
        from dbt.config.profile import read_profile

        try:
            raw = read_profile(str(self.args.resolved_profiles_dir()))
            default = raw[self.config.profile_name].get("target", "default")
            if isinstance(default, str) and "{{" in default:
                default = JinjaRenderer()(default)
            return str(default)
        except Exception:  # noqa: BLE001 - unknown is an acceptable answer here
            return None

    # -- manifest -----------------------------------------------------------------------------

    def load(self) -> "DbtProject":
        if not (self.project_dir / "dbt_project.yml").exists():
            raise ConfigError(f"no dbt project at {self.project_dir} (dbt_project.yml not found); "
                              "pass --project-dir or set DBT_PROJECT_DIR")
        _set_dbt_flags(self.args)
        self.config = self._runtime_config()
        if self.artifacts_dir:
            path = self.artifacts_path / "manifest.json"
            if not path.exists():
                raise ConfigError(f"{path} not found: --artifacts-dir must hold the build's manifest.json "
                                  "and run_results.json")
            self.manifest = _read_manifest(path)
            self.manifest_origin = str(path)
        elif self._target_manifest_is_current():
            path = self.target_dir / "manifest.json"
            self.manifest = _read_manifest(path)
            self.manifest_origin = str(path)
        else:
            self.manifest = self._parse()
            self.manifest_origin = "dbt parse"
        return self

    def _runtime_config(self) -> Any:
        from dbt.config.runtime import RuntimeConfig

        try:
            return RuntimeConfig.from_args(_namespace(self.args))
        except Exception as exc:  # dbt raises several profile/project error types
            raise ConfigError(f"dbt could not load the project or its profile: {_one_line(exc)}") from None

    def _target_manifest_is_current(self) -> bool:
        """target/manifest.json describes this run: same invocation as run_results.json, and that
        invocation used this target, profile and vars, and no project file changed since."""
        manifest_path = self.target_dir / "manifest.json"
        results_path = self.target_dir / "run_results.json"
        if not manifest_path.exists() or not results_path.exists():
            return False
        try:
            manifest_meta = _json_head(manifest_path).get("metadata", {})
            results = json.loads(results_path.read_text())
        except (OSError, ValueError):
            return False
        args = results.get("args") or {}
        if manifest_meta.get("invocation_id") != (results.get("metadata") or {}).get("invocation_id"):
            return False
        if (args.get("vars") or {}) != (self.args.vars or {}) or args.get("profile") != self.args.profile:
            return False
        if (args.get("target") or None) != self.args.resolved_target():
            return False
        return not _is_stale(self.project_dir, manifest_path)

    def _parse(self) -> Any:
        from dbt.cli.main import dbtRunner

        errors: list[str] = []
        runner = dbtRunner(callbacks=[_collect_errors(errors)])
        result = runner.invoke(["parse", *self.args.cli_flags(), "--no-write-json", "--log-level", "none"])
        self._adapter = None
        if not result.success:
            detail = _one_line(result.exception) if result.exception else "; ".join(errors) or "unknown error"
            raise ConfigError(f"dbt parse failed for {self.project_dir}: {detail}")
        return result.result

    # -- selection ----------------------------------------------------------------------------

    def select(self, select: tuple[str, ...] = (), exclude: tuple[str, ...] = (), *,
               selector: str | None = None, state: str | None = None) -> set[str] | None:
        """The unique ids dbt's own selector engine picks (`dbt ls` in-process, on our manifest), or
        None when nothing narrows the choice (no flags, and no default selector in selectors.yml)."""
        selector = selector or self.args.selector
        state_dir = Path(state).resolve() if state else self.args.resolved_state()
        if not select and not exclude and not selector and not self._has_default_selector():
            return None
        from dbt.cli.main import dbtRunner

        cmd = ["ls", *self.args.cli_flags(), "--output", "json", "--output-keys", "unique_id",
               "--log-level", "none", "--resource-type", *SYNCABLE_TYPES]
        if select:
            cmd += ["--select", *select]
        if exclude:
            cmd += ["--exclude", *exclude]
        if selector:
            cmd += ["--selector", selector]
        if state_dir is not None:
            if not state_dir.is_dir():
                raise ConfigError(f"--state {state_dir}: no such directory")
            cmd += ["--state", str(state_dir)]
        errors: list[str] = []
        result = dbtRunner(manifest=self.manifest, callbacks=[_collect_errors(errors)]).invoke(cmd)
        self._adapter = None
        if not result.success:
            detail = _one_line(result.exception) if result.exception else "; ".join(errors) or "unknown error"
            raise ConfigError(f"dbt could not apply the selection: {detail}")
        return {json.loads(line)["unique_id"] for line in result.result or []}

    def _has_default_selector(self) -> bool:
        """selectors.yml marks a selector `default: true`: dbt applies it when nothing is selected."""
        return self.config is not None and self.config.get_default_selector_name() is not None

    # -- declarations -------------------------------------------------------------------------

    def declarations(self, selected: set[str] | None = None) -> list[Declaration]:
        """Every enabled node (model, snapshot, seed) with `config.meta.emarsys`, and where it was set.
        Disabled nodes are not in the manifest's nodes, so they are ignored."""
        files = locate.YamlFiles(self.project_dir)
        found = []
        for uid, node in self.manifest.nodes.items():
            if node.resource_type.value not in SYNCABLE_TYPES:
                continue
            meta = (node.config.meta or {}) if node.config else {}
            if SPEC_ROOT not in meta:
                continue
            if selected is not None and uid not in selected:
                continue
            source = self._meta_source(files, node, SPEC_ROOT)
            defaults_source = self._meta_source(files, node, DEFAULTS_META_KEY) \
                if DEFAULTS_META_KEY in meta else None
            model = model_ref(node, source.path)
            found.append(Declaration(model, meta[SPEC_ROOT], source, meta.get(DEFAULTS_META_KEY),
                                     defaults_source))
        return sorted(found, key=lambda d: d.model.unique_id)

    def sync_models(self, selected: set[str] | None = None) -> list[tuple[ModelRef, Any]]:
        """(model, raw `meta.emarsys`) of every declaring node; see `declarations` for the details."""
        self.warn_misplaced(selected)
        return [(d.model, d.meta) for d in self.declarations(selected)]

    def misplaced(self, selected: set[str] | None = None) -> list[Problem]:
        """Declarations dbt doesn't put in meta, so they would be silently ignored: `config: {emarsys:
        ...}` in YAML, `config(emarsys=...)` in SQL, `+emarsys:` in dbt_project.yml. (A top-level
        `meta:` on a model is fine: dbt 1.10+ merges it into `config.meta`.)"""
        files = locate.YamlFiles(self.project_dir)
        found = []
        for uid, node in sorted(self.manifest.nodes.items()):
            if node.resource_type.value not in SYNCABLE_TYPES or (selected is not None and uid not in selected):
                continue
            for key in (SPEC_ROOT, DEFAULTS_META_KEY):
                if _config_extra(node, key) is None:
                    continue
                path, line = self._config_key_location(files, node, key)
                found.append(Problem(_display_name(node), path, f"config.{key}",
                                     f"model {_display_name(node)} declares `config.{key}`; move it under "
                                     f"`config.meta.{key}` (dbt keeps custom keys straight under `config` out "
                                     "of meta, so it is ignored; dbt Fusion refuses them)", line))
        return found

    def warn_misplaced(self, selected: set[str] | None = None) -> None:
        """Log `misplaced` as warnings (ls, run), once per declaration."""
        for problem in self.misplaced(selected):
            if str(problem) not in self._warned:
                self._warned.add(str(problem))
                log.warning("%s", problem)

    def _config_key_location(self, files: locate.YamlFiles, node: Any, key: str) -> tuple[str, int | None]:
        patch = node.patch_path.split("://", 1)[-1] if getattr(node, "patch_path", None) else None
        version = str(node.version) if getattr(node, "version", None) is not None else None
        for path in (node.original_file_path, patch):
            if path:
                line = locate.config_key_line(files, path, node.resource_type.value, node.name, version, key)
                if line is not None:
                    return path, line
        fqn = list(node.fqn[1:]) if node.fqn else []
        line = locate.project_config_key_line(files, node.resource_type.value, [node.package_name, *fqn], key)
        if line is not None:
            return "dbt_project.yml", line
        return patch or node.original_file_path, None

    def project_settings(self) -> tuple[ProjectDefaults, list[Problem]]:
        """The var `emarsys` (project-wide sync defaults and exposure settings)."""
        cli_vars = getattr(self.config, "cli_vars", None) or self.args.vars or {}
        if PROJECT_VAR in cli_vars:
            return parse_project_settings(cli_vars[PROJECT_VAR], Source("--vars", f"vars.{PROJECT_VAR}"))
        variables = self.project_vars()
        files = locate.YamlFiles(self.project_dir)
        source = locate.in_vars(files, self.config.project_name, PROJECT_VAR) or \
            Source("dbt_project.yml", f"vars.{PROJECT_VAR}")
        return parse_project_settings(variables.get(PROJECT_VAR), source)

    def project_vars(self) -> dict[str, Any]:
        """The root project's vars as `var()` sees them: global, then scoped to the project, then --vars."""
        raw = dict(self.config.vars.to_dict()) if self.config is not None else {}
        scoped = raw.get(getattr(self.config, "project_name", None))
        merged = {**raw, **(scoped if isinstance(scoped, dict) else {})}
        merged.update(getattr(self.config, "cli_vars", None) or self.args.vars or {})
        return merged

    def renderer(self) -> JinjaRenderer:
        credentials = getattr(self.config, "credentials", None)
        target = {"name": self.target_name, "profile_name": getattr(self.config, "profile_name", None),
                  "type": getattr(credentials, "type", None), "schema": getattr(credentials, "schema", None),
                  "database": getattr(credentials, "database", None)}
        return JinjaRenderer(self.project_vars(), target=target)

    def collect_syncs(self, selected: set[str] | None = None) -> tuple[list[Sync], list[Problem]]:
        """Every declared sync (project defaults merged, Jinja rendered) and every problem found."""
        found = self.collect(selected)
        return found.syncs, found.problems

    def collect(self, selected: set[str] | None = None) -> Collected:
        """`collect_syncs`, with what can still be checked of the syncs that have problems."""
        project, problems = self.project_settings()
        found = collect(self.declarations(selected), project=project, render=self.renderer())
        found.problems = problems + found.problems
        return found

    def syncs(self, selected: set[str] | None = None) -> list[Sync]:
        """`collect_syncs`, raising SpecError with every problem (misplaced declarations are warned of)."""
        self.warn_misplaced(selected)
        syncs, problems = self.collect_syncs(selected)
        if problems:
            raise SpecError(problems)
        return syncs

    def _meta_source(self, files: locate.YamlFiles, node: Any, meta_key: str) -> Source:
        """Where a node's `meta_key` was set. dbt's precedence: SQL config() > YAML > dbt_project.yml."""
        resource = node.resource_type.value
        in_root = node.package_name == getattr(self.config, "project_name", node.package_name)
        patch = node.patch_path.split("://", 1)[-1] if getattr(node, "patch_path", None) else None
        fallback = Source(patch or node.original_file_path, meta_key)
        if not in_root:
            return fallback
        original = node.original_file_path
        version = str(node.version) if getattr(node, "version", None) is not None else None
        if original.endswith((".sql", ".py")):
            found = locate.in_sql_file(files, original, meta_key)
            if found is not None:
                return found
        for path in (patch, original if original.endswith((".yml", ".yaml")) else None):
            if path:
                found = locate.in_properties_file(files, path, resource, node.name, version, meta_key)
                if found is not None:
                    return found
        fqn = list(node.fqn[1:]) if node.fqn else []
        if version is not None and fqn and fqn[-1] == f"v{version}":
            fqn = fqn[:-1]
        found = locate.in_project_file(files, resource, [node.package_name, *fqn], meta_key)
        return found or fallback

    # -- build results ------------------------------------------------------------------------

    def child_map(self) -> dict[str, list[str]]:
        """unique_id -> the nodes that depend on it (tests included), as manifest.json's child_map."""
        if getattr(self.manifest, "child_map", None) is None:
            self.manifest.build_parent_and_child_maps()
        return self.manifest.child_map

    def run_results(self) -> dict | None:
        """The last build's run_results.json as plain JSON (Fusion writes fields dbt-core's classes
        refuse), or None when there is none."""
        path = self.artifacts_path / "run_results.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"could not read {path}: {_one_line(exc)}") from None

    # -- adapter ------------------------------------------------------------------------------

    def adapter(self) -> Any:
        """The project's dbt adapter for its profile and target, with macros available."""
        if self._adapter is not None:
            return self._adapter
        from dbt.adapters.factory import get_adapter, register_adapter
        from dbt.context.providers import generate_runtime_macro_context
        from dbt.mp_context import get_mp_context
        from dbt_common.events.base_types import EventLevel

        if self.config is None:
            _set_dbt_flags(self.args)
            self.config = self._runtime_config()
        _drop_foreign_adapter(self.config)
        register_adapter(self.config, get_mp_context(), adapter_registered_log_level=EventLevel.DEBUG)
        adapter = get_adapter(self.config)
        adapter.set_macro_resolver(self.manifest)
        adapter.set_macro_context_generator(generate_runtime_macro_context)
        self._adapter = adapter
        return adapter

    def warehouse_problem(self, what: str, exc: BaseException) -> ConfigError:
        """The warehouse refused us (a wrong path, host, password or grant): one line naming the profile
        and target, with a hint for the commonest DuckDB mistake."""
        config = self.config
        where = f" of profile {config.profile_name!r}, target {config.target_name!r}" if config is not None else ""
        text = _one_line(exc)
        for heading in ("Runtime Error ", "Database Error "):
            text = text.removeprefix(heading)
        hint = ""
        if config is not None and config.credentials.type == "duckdb" and "no such file" in text.lower():
            hint = (f" (a relative DuckDB path in profiles.yml is taken from the directory you run in, "
                    f"{os.getcwd()}: run from the project's directory or make the path absolute)")
        return ConfigError(f"{what}{where}: {text}{hint}")

    @contextmanager
    def connection(self, name: str = "emarsys-sync") -> Iterator[Any]:
        adapter = self.adapter()
        with adapter.connection_named(name):
            yield adapter

    @property
    def threads(self) -> int:
        if self.args.threads:
            return self.args.threads
        if self.config is None:
            self.adapter()
        return int(getattr(self.config, "threads", 1) or 1)


def _config_extra(node: Any, key: str) -> Any:
    """A custom key dbt kept straight under a node's config (not in meta), or None. Read from the
    config's extras only: dbt's `config.get()` prints a deprecation warning on stdout (--output json)."""
    extra = getattr(getattr(node, "config", None), "_extra", None)
    return extra.get(key) if isinstance(extra, dict) else None


def _display_name(node: Any) -> str:
    version = getattr(node, "version", None)
    return f"{node.name}.v{version}" if version is not None else node.name


def model_ref(node: Any, declared_in: str | None = None) -> ModelRef:
    patch = node.patch_path.split("://", 1)[-1] if getattr(node, "patch_path", None) else None
    contract = getattr(node, "contract", None)
    columns = tuple((c.name, c.data_type or None) for c in (getattr(node, "columns", None) or {}).values())
    version = getattr(node, "version", None)
    return ModelRef(
        unique_id=node.unique_id,
        name=node.name,
        relation_name=node.relation_name,
        yaml_path=declared_in or patch or node.original_file_path,
        materialized=node.config.materialized,
        resource_type=node.resource_type.value,
        package_name=node.package_name,
        version=str(version) if version is not None else None,
        database=node.database,
        schema=node.schema,
        identifier=getattr(node, "alias", None) or getattr(node, "identifier", None) or node.name,
        declared_columns=columns,
        contract_enforced=bool(getattr(contract, "enforced", False)),
    )


def _namespace(args: DbtArgs) -> Namespace:
    return Namespace(
        project_dir=str(args.resolved_project_dir()),
        profiles_dir=str(args.resolved_profiles_dir()),
        target=args.resolved_target(),
        profile=args.profile,
        vars=args.vars or {},
        threads=args.threads,
        target_path=os.environ.get("DBT_TARGET_PATH") or None,
        send_anonymous_usage_stats=False,
    )


def _set_dbt_flags(args: DbtArgs) -> None:
    """dbt reads global flags and an invocation context when used as a library (dbt-notes.md §2)."""
    from dbt.flags import set_from_args
    from dbt_common.context import set_invocation_context

    set_invocation_context(dict(os.environ))
    set_from_args(_namespace(args), {})


def _drop_foreign_adapter(config: Any) -> None:
    """dbt keeps one adapter per type per process and `register_adapter` keeps an existing one, so an
    adapter registered for another project or profile (an earlier run in this process) would be used
    with its credentials. Reset it first; dbt's own commands reset adapters on every invoke."""
    from dbt.adapters.factory import FACTORY, reset_adapters

    existing = FACTORY.adapters.get(config.credentials.type)
    if existing is None:
        return
    theirs = existing.config
    if theirs.credentials != config.credentials or theirs.project_root != config.project_root or \
            getattr(theirs, "target_name", None) != config.target_name:
        reset_adapters()


def _collect_errors(sink: list[str]):
    """A dbtRunner callback keeping error events' messages (the console shows none of dbt's logs)."""
    def callback(event: Any) -> None:
        if getattr(event.info, "level", "") == "error" and event.info.msg:
            sink.append(" ".join(str(event.info.msg).split()))
    return callback


def _read_manifest(path: Path) -> Any:
    from dbt.artifacts.schemas.manifest import WritableManifest
    from dbt.contracts.graph.manifest import Manifest

    try:
        return Manifest.from_writable_manifest(WritableManifest.read_and_check_versions(str(path)))
    except Exception as exc:
        raise ConfigError(f"could not read {path}: {_one_line(exc)}") from None


def _json_head(path: Path) -> dict:
    """The top-level `metadata` of a (possibly large) dbt artifact without reading the whole file."""
    with open(path, "rb") as handle:
        head = handle.read(4096).decode("utf-8", "replace")
    start = head.find('"metadata"')
    if start >= 0:
        try:
            obj, _ = json.JSONDecoder().raw_decode(head[head.index("{", start):])
            return {"metadata": obj}
        except ValueError:
            pass
    return json.loads(path.read_text())


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
