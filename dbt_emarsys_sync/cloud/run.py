"""The artifact-driven run: a dbt Cloud run's manifest and run results -> the runner.

    outcome = sync_dbt_cloud_run(RunRequest(project_dir=...), run_id=12345)

1. Ask the Admin API for the run (with its steps) and check it may be synced.
2. Download `manifest.json` of the run's last `dbt build`/`dbt run` step (not the last step: with
   "generate docs" on, that is `docs generate`), and `run_results.json` of every build/run/test/seed/
   snapshot step, merged, so a job made of `dbt run` then `dbt test` still gates on its tests.
3. Hand that directory to the runner (`RunRequest.artifacts_dir`): it syncs only the models the run
   built successfully and whose tests passed, reading the warehouse through the local dbt project's
   profile (the service's own credentials) at the relations the run's manifest names.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .api import COMPLETE, ERROR, AdminApiClient, DbtCloudRun, RunStep, write_json
from .errors import CloudConfigError, RunNotSyncable
from .settings import AdminApiSettings, RunPolicy
from .webhook import decide_run

log = logging.getLogger(__name__)

MANIFEST_VERBS = ("build", "run")
RESULT_VERBS = ("build", "run", "test", "seed", "snapshot")
ARTIFACTS_SUBDIR = "dbt_cloud"
KEEP_RUN_DIRS = 20


@dataclass(frozen=True)
class RunArtifacts:
    directory: Path
    manifest_step: RunStep
    result_steps: tuple[RunStep, ...]
    bytes_downloaded: int


@dataclass
class CloudSyncOutcome:
    run: DbtCloudRun
    artifacts: RunArtifacts
    report: Any          # report.RunReport


def artifact_steps(run: DbtCloudRun) -> tuple[RunStep, tuple[RunStep, ...]]:
    """The step whose manifest to use, and the steps whose run results to merge (in order)."""
    ran = [s for s in run.steps if s.status in COMPLETE]
    builds = [s for s in ran if s.verb in MANIFEST_VERBS]
    if not builds:
        names = "; ".join(f"{s.index}: {s.name} ({s.status})" for s in run.steps) or "none"
        raise RunNotSyncable(f"run {run.id} has no `dbt build` or `dbt run` step that ran, so nothing was "
                             f"built to sync (steps: {names})")
    results = tuple(s for s in ran if s.verb in RESULT_VERBS)
    return builds[-1], results


def fetch_artifacts(api: AdminApiClient, run: DbtCloudRun, dest: Path, *,
                    reading_target: str | None = None) -> RunArtifacts:
    """Download the run's manifest and (merged) run results into `dest`.

    `reading_target` is the local target the syncs read with (None: the profile's default). The run's
    own target name is dbt Cloud's and means nothing to the local profile: the relations to read are
    the ones the run's manifest names. So the merged run_results.json carries the reading target (the
    run's is kept as `args.dbt_cloud_target`), and the runner's "built for another target" check, meant
    for a local target/ directory, holds."""
    manifest_step, result_steps = artifact_steps(run)
    dest.mkdir(parents=True, exist_ok=True)
    total = api.download_artifact(run.id, "manifest.json", manifest_step.index, dest / "manifest.json")
    parts: dict[int, dict[str, Any]] = {}
    for step in result_steps:
        part = dest / f"run_results.step-{step.index}.json"
        total += api.download_artifact(run.id, "run_results.json", step.index, part)
        parts[step.index] = _read_json(part, f"run_results.json of step {step.index}")
    write_json(dest / "run_results.json", _merge_run_results(parts, manifest_step.index, reading_target))
    write_json(dest / "dbt_cloud_run.json", run.summary())
    log.info("downloaded the artifacts of run %s: manifest of step %s (%s), run results of step(s) %s; "
             "%d bytes", run.id, manifest_step.index, manifest_step.name,
             ", ".join(str(s.index) for s in result_steps), total)
    return RunArtifacts(dest, manifest_step, result_steps, total)


def _merge_run_results(parts: dict[int, dict], manifest_step: int, reading_target: str | None) -> dict:
    """One run_results.json for the run: the build step's metadata and command, and the results of every
    step in order, a later step winning for a node both ran (`dbt test` after `dbt run` adds the tests)."""
    by_id: dict[str, dict] = {}
    for index in sorted(parts):
        results = parts[index].get("results")
        if not isinstance(results, list):
            raise CloudConfigError(f"run_results.json of step {index} has no `results` list")
        for result in results:
            by_id[str(result.get("unique_id"))] = result
    base = parts[manifest_step]
    args = dict(base.get("args") or {})
    args["dbt_cloud_target"] = args.get("target")
    args["target"] = reading_target
    return dict(base, args=args, results=list(by_id.values()),
                elapsed_time=sum(float(p.get("elapsed_time") or 0) for p in parts.values()))


def check_syncable(run: DbtCloudRun, policy: RunPolicy, *, apply_allow_lists: bool) -> None:
    if not run.is_complete:
        raise RunNotSyncable(f"run {run.id} is not finished ({run.status_name}); its artifacts are not "
                             "final yet")
    decision = decide_run(run.job_id, run.environment_id, run.status, policy, status_name=run.status_name,
                          apply_allow_lists=apply_allow_lists)
    if not decision.act:
        raise RunNotSyncable(f"run {run.id} of job {run.job_id} is not synced: {decision.reason}")


def check_same_project(artifacts_dir: Path, project_dir: Path) -> None:
    """The service reads the warehouse with the local project's profile: refuse a run of another project
    rather than sync with the wrong profile."""
    manifest_project = _manifest_project_name(artifacts_dir / "manifest.json")
    local_project = _local_project_name(project_dir)
    if manifest_project and local_project and manifest_project != local_project:
        raise CloudConfigError(
            f"the dbt Cloud run built dbt project {manifest_project!r}, but the local project at "
            f"{project_dir} is {local_project!r}; point DBT_PROJECT_DIR (--project-dir) at a checkout of "
            "the project the job runs")


def sync_dbt_cloud_run(request, *, run_id: int | None = None, job_id: int | None = None,
                       api: AdminApiClient | None = None, policy: RunPolicy | None = None,
                       apply_allow_lists: bool = False, console=None, settings=None, transport=None,
                       on_run: Callable[[DbtCloudRun], None] | None = None) -> CloudSyncOutcome:
    """Sync the models one dbt Cloud run built: `run_id`, or the latest finished run of `job_id`.

    `request` is the runner's RunRequest (project, profile, target, selection); `settings` and
    `transport` are passed on to the runner (Emarsys). `on_run` is told the run as soon as it is known
    (the command line prints which run it took)."""
    from ..runner import run_syncs

    if (run_id is None) == (job_id is None):
        raise ConfigError("name exactly one dbt Cloud run: a run id or a job id (its latest finished run)")
    policy = policy or RunPolicy.from_env()
    own_api = api is None
    api = api or AdminApiClient(AdminApiSettings.from_env())
    try:
        run = api.get_run(run_id) if run_id is not None else api.latest_completed_run(job_id)
        if on_run is not None:
            on_run(run)
        log.info("dbt Cloud run %s of job %s (%s), environment %s: %s", run.id, run.job_id,
                 run.job_name or "?", run.environment_id, run.status_name)
        check_syncable(run, policy, apply_allow_lists=apply_allow_lists)
        project_dir = request.dbt_args().resolved_project_dir()
        runs_root = target_dir(project_dir) / ARTIFACTS_SUBDIR
        run_dir = runs_root / f"run-{run.id}"
        if run_dir.exists():
            shutil.rmtree(run_dir)   # a new attempt downloads afresh; never mix two attempts' files
        artifacts = fetch_artifacts(api, run, run_dir,
                                    reading_target=request.dbt_args().resolved_target())
    finally:
        if own_api:
            api.close()
    check_same_project(artifacts.directory, project_dir)
    if run.status == ERROR:
        log.warning("run %s failed: syncing only the models it built successfully and whose tests passed",
                    run.id)
    report = run_syncs(dataclasses.replace(request, artifacts_dir=str(artifacts.directory)), console,
                       settings=settings, transport=transport)
    report.write(artifacts.directory)
    _prune_old_runs(runs_root, keep=KEEP_RUN_DIRS)
    return CloudSyncOutcome(run, artifacts, report)


def _prune_old_runs(root: Path, keep: int) -> None:
    """Downloaded manifests can be large: keep the newest `keep` run directories."""
    dirs = sorted((d for d in root.glob("run-*") if d.is_dir()), key=lambda d: d.stat().st_mtime,
                  reverse=True)
    for old in dirs[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise CloudConfigError(f"{what} downloaded from dbt Cloud is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CloudConfigError(f"{what} downloaded from dbt Cloud is not a JSON object")
    return data


def _manifest_project_name(path: Path) -> str | None:
    # The manifest can be hundreds of MB; its metadata comes first, so read only the head.
    with open(path, "rb") as f:
        head = f.read(64 * 1024).decode("utf-8", "replace")
    marker = head.find('"project_name"')
    if marker < 0:
        return None
    rest = head[marker + len('"project_name"'):].lstrip()
    if not rest.startswith(":"):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(rest[1:].lstrip())
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def target_dir(project_dir: Path) -> Path:
    """dbt's target path, where the runner writes too: DBT_TARGET_PATH, else dbt_project.yml's
    `target-path`, else `target` (relative paths are relative to the project)."""
    configured = os.environ.get("DBT_TARGET_PATH") or _project_yml(project_dir).get("target-path")
    return project_dir / (configured if isinstance(configured, str) and configured else "target")


def _local_project_name(project_dir: Path) -> str | None:
    name = _project_yml(project_dir).get("name")
    return name if isinstance(name, str) else None


def _project_yml(project_dir: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load((project_dir / "dbt_project.yml").read_text())
    except (OSError, yaml.YAMLError):
        return {}   # the runner reports a missing or broken dbt_project.yml with its own message
    return data if isinstance(data, dict) else {}



def run_from_cli(request, *, run_id: int | None, job_id: int | None, console=None):
    """`dbt-emarsys-sync run --dbt-cloud-run-id N` (or `--dbt-cloud-job-id J`): the same artifact-driven
    run as the webhook service, from a shell or an orchestrator. Returns the runner's RunReport."""
    if getattr(request, "artifacts_dir", None):
        raise ConfigError("--artifacts-dir can't be combined with --dbt-cloud-run-id/--dbt-cloud-job-id: "
                          "the artifacts come from the dbt Cloud run")

    def announce(run: DbtCloudRun) -> None:
        if console is not None:
            console.print(f"dbt Cloud run {run.id} of job {run.job_id} ({run.job_name or '?'}), "
                          f"environment {run.environment_id}: {run.status_name}", markup=False,
                          highlight=False)

    return sync_dbt_cloud_run(request, run_id=run_id, job_id=job_id, console=console, on_run=announce).report
