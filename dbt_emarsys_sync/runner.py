"""`run` as a library call: settings -> project -> declarations -> Emarsys catalog -> engine -> report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .dbt.project import DbtArgs, DbtProject
from .dbt.source import DbtWarehouseSource
from .emarsys import EmarsysClient, EmarsysSettings, FieldCatalog
from .engine import Engine
from .errors import ConfigError
from .report import RunReport, render
from .spec import parse_declarations


@dataclass(frozen=True)
class RunRequest:
    project_dir: str | None = None
    profiles_dir: str | None = None
    target: str | None = None
    profile: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def dbt_args(self) -> DbtArgs:
        return DbtArgs(project_dir=self.project_dir, profiles_dir=self.profiles_dir, target=self.target,
                       profile=self.profile, vars=self.vars)


def run_syncs(request: RunRequest, console=None, settings: EmarsysSettings | None = None,
              transport=None) -> RunReport:
    """Run every selected sync; configuration problems raise before anything is sent."""
    settings = settings or EmarsysSettings.from_env()
    project = DbtProject(request.dbt_args()).load()
    selected = project.select(request.select, request.exclude)
    models = project.sync_models(selected)
    if not models:
        if request.select or request.exclude:
            raise ConfigError("no model with a config.meta.emarsys declaration matches the selection "
                              f"(--select {' '.join(request.select) or '-'} "
                              f"--exclude {' '.join(request.exclude) or '-'})")
        raise ConfigError(f"no model in {project.project_dir} declares config.meta.emarsys")
    syncs = [s for s in parse_declarations(models) if s.spec.enabled]

    report = RunReport()
    with EmarsysClient(settings, transport=transport) as client:
        # The connection check and the field catalog in one call, before anything is written.
        catalog = FieldCatalog.from_api(client.get_fields(), choice_loader=client.get_choices)
        engine = Engine(client, catalog, DbtWarehouseSource(project))
        prepared, problems = [], []
        for sync in syncs:
            try:
                prepared.append(engine.prepare(sync))
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems) if len(problems) == 1 else
                              f"{len(problems)} syncs can't run:\n  " + "\n  ".join(problems))
        for item in prepared:
            if console is not None:
                console.print(f"Syncing {item.sync.name} (model {item.sync.model.name}, "
                              f"{item.sync.spec.behaviour})...")
            report.syncs.append(engine.run(item))
    report.write(project.target_dir)
    if console is not None:
        render(report, console)
    return report
