"""`run` as a library call: project -> declarations -> gate -> plan (in the warehouse) -> check -> send ->
report.

    1. declarations and the models' columns (warehouse only): configuration problems raise here
    2. plan, per sync in parallel: lock, recover an interrupted run, diff into a plan table
    3. only when some plan has rows to send: the Emarsys field catalogue and the row mappers; a
       configuration problem here abandons every plan before anything is sent (a run with no changes
       makes no API request at all)
    4. send, per sync in parallel (--threads), within one rate limit per API user
"""

from __future__ import annotations

import difflib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from .checks import column_type_problems, require_columns
from .dbt.gating import gate
from .dbt.project import DbtArgs, DbtProject
from .dbt.source import DbtWarehouseSource, ephemeral_problem
from .emarsys import EmarsysClient, EmarsysSettings, FieldCatalog, InFlightKeys, TransientError
from .emarsys.client import auth_for
from .emarsys.settings import MissingCredentials
from .engine import Engine, EngineOptions, RunOptions, SyncJob, build_shape
from .errors import ConfigError
from .report import Progress, RunReport, SyncReport, render

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True)
class RunRequest:
    project_dir: str | None = None
    profiles_dir: str | None = None
    target: str | None = None
    profile: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    selector: str | None = None                # a selector of selectors.yml
    state: str | None = None                   # artifacts for state:/result: selection (dbt's --state)
    ignore_build_results: bool = False         # sync even models whose last build failed (no gating)
    artifacts_dir: str | None = None           # manifest.json + run_results.json instead of target/
    dry_run: bool = False                      # plan only: nothing is written to Emarsys or the state
    full_refresh: bool = False                 # re-send every row; lists: reconcile with their real members
    allow_mass_removal: bool = False           # lift the mirror safety limits for this run
    threads: int | None = None                 # syncs run at once (default: the dbt profile's threads)
    state_schema: str | None = None            # default: EMARSYS_SYNC_STATE_SCHEMA, else <target schema>_emarsys_sync
    lock_timeout: float = 60.0                 # seconds to wait for another run of the same sync
    batch_size: int | None = None              # contacts per request (at most 1000)
    samples: int = 5                           # dry run: sample rows per category
    # Set it (e.g. from a signal handler) to stop the syncs at their next batch, keeping what Emarsys
    # acknowledged; the syncs under way end as failed ("interrupted").
    stop: threading.Event | None = field(default=None, compare=False)

    def dbt_args(self) -> DbtArgs:
        return DbtArgs(project_dir=self.project_dir, profiles_dir=self.profiles_dir, target=self.target,
                       profile=self.profile, vars=self.vars, selector=self.selector, state=self.state)


class _Clients:
    """One Emarsys client per sync (its own request counts), sharing the per-API-user rate limiter
    (the client's registry) and one in-flight key guard: two syncs never write one key at once."""

    def __init__(self, settings: EmarsysSettings | None, transport: Any):
        self.settings, self.transport = settings, transport
        self.guard = InFlightKeys()
        # One credentials flow for the run: one OAuth token, however many syncs send.
        self.auth = auth_for(settings) if settings is not None else None
        self._clients: list[EmarsysClient] = []
        self._lock = threading.Lock()
        self._catalog: FieldCatalog | None = None

    def new(self) -> EmarsysClient | None:
        if self.settings is None:
            return None
        client = EmarsysClient(self.settings, transport=self.transport, key_guard=self.guard, auth=self.auth)
        with self._lock:
            self._clients.append(client)
        return client

    def catalog(self) -> FieldCatalog | None:
        """The account's fields (GET /field, also the connection check), fetched once, on first need."""
        with self._lock:
            if self._catalog is None and self.settings is not None:
                client = EmarsysClient(self.settings, transport=self.transport, key_guard=self.guard,
                                       auth=self.auth)
                self._clients.append(client)
                self._catalog = FieldCatalog.from_api(client.get_fields(), choice_loader=client.get_choices)
            return self._catalog

    @property
    def requests(self) -> int:
        return sum(c.requests_sent for c in self._clients)

    def close(self) -> None:
        for client in self._clients:
            client.close()


class _Heartbeat:
    """Refreshes the heartbeat of the locks this run holds, so other hosts don't take them over."""

    def __init__(self, source: DbtWarehouseSource, jobs: list[SyncJob], interval: float = HEARTBEAT_SECONDS):
        self.source, self.jobs, self.interval = source, jobs, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emarsys-heartbeat", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            held = [j.run_id for j in self.jobs if j.locked]
            if not held:
                continue
            try:
                with self.source.connection("emarsys-heartbeat"):
                    self.source.store.heartbeat(held)
            except Exception:  # noqa: BLE001 - a missed heartbeat only risks a takeover much later
                log.warning("could not refresh the sync locks' heartbeat", exc_info=True)


def _parallel(threads: int, jobs: list[SyncJob], work: Callable[[SyncJob], None],
              on_interrupt: Callable[[], None] = lambda: None) -> None:
    if threads <= 1 or len(jobs) <= 1:
        for job in jobs:
            work(job)
        return
    with ThreadPoolExecutor(min(threads, len(jobs)), thread_name_prefix="sync") as pool:
        futures = [pool.submit(work, job) for job in jobs]
        try:
            for future in futures:
                future.result()
        except KeyboardInterrupt:
            # The syncs under way stop at their next batch and keep what was acknowledged; the
            # pool waits for them before the interrupt goes on.
            on_interrupt()
            for future in futures:
                future.cancel()
            raise


def _off_thread(fn: Callable, *args: Any) -> Any:
    """Call `fn` on a thread of its own: dbt closes a thread's connection when a `connection_named`
    block ends, and this thread's connection holds the warehouse open for the whole run."""
    with ThreadPoolExecutor(1, thread_name_prefix="emarsys-check") as pool:
        return pool.submit(fn, *args).result()


def run_syncs(request: RunRequest, console=None, settings: EmarsysSettings | None = None,
              transport=None) -> RunReport:
    """Run (or, with `dry_run`, plan) every selected sync; configuration problems raise before anything
    is sent."""
    missing: MissingCredentials | None = None
    if settings is None:
        try:
            settings = EmarsysSettings.from_env()
        except MissingCredentials as exc:
            if not request.dry_run:
                raise
            settings, missing = None, exc   # a dry run can still diff and count (not with bad settings)
    if request.batch_size is not None and not 1 <= request.batch_size <= 1000:
        raise ConfigError(f"--batch-size must be between 1 and 1000 (Emarsys takes at most 1000 contacts a "
                          f"request), got {request.batch_size}")
    project = DbtProject(request.dbt_args(), artifacts_dir=request.artifacts_dir).load()
    selected = project.select(request.select, request.exclude)
    models = project.sync_models(selected)
    if not models:
        raise no_syncs_selected(project, selected, request.select, request.exclude, request.selector)
    declared_syncs = project.syncs(selected)
    syncs = [s for s in declared_syncs if s.spec.enabled]
    if declared_syncs and not syncs:
        log.warning("nothing to do: every selected sync is disabled (enabled: false): %s",
                    ", ".join(sorted(s.name for s in declared_syncs)))
    if missing is not None and request.full_refresh and any(s.spec.behaviour == "mirror" for s in syncs):
        raise missing       # a mirror's full refresh reads the list from Emarsys: as `run` would say

    # Before the build results, which could only call an ephemeral model unbuilt (dbt never builds it).
    ephemeral = [p for p in (ephemeral_problem(s.model) for s in syncs) if p]
    if ephemeral:
        raise problems_error(ephemeral)

    report = RunReport(dry_run=request.dry_run, samples=request.samples)
    # Only models whose last build succeeded and whose tests passed; the others are reported skipped.
    build_gate = gate(project, {s.model.unique_id: s.model for s in syncs}.values(),
                      ignore_build_results=request.ignore_build_results)
    for sync in [s for s in syncs if not build_gate.allows(s.model.unique_id)]:
        skipped = SyncReport(sync.name, sync.model.name, sync.spec.object, sync.spec.behaviour)
        skipped.start()
        skipped.finish("skipped", build_gate.reason(sync.model.unique_id) or "")
        report.syncs.append(skipped)
        if console is not None:
            console.print(f"Skipping {sync.name}: {skipped.message}", markup=False)
    syncs = [s for s in syncs if build_gate.allows(s.model.unique_id)]

    options = EngineOptions(lock_timeout=request.lock_timeout,
                            **({"max_batch_contacts": request.batch_size} if request.batch_size else {}))
    source = DbtWarehouseSource(project, request.state_schema)
    clients = _Clients(settings, transport)
    threads = max(1, request.threads or project.threads)
    jobs: list[SyncJob] = []
    try:
        with source.hold(request.lock_timeout):
            report.state_schema = source.store.schema
            jobs = _jobs(project, source, syncs)
            if not request.dry_run:
                source.store.migrate()
            if settings is not None:
                check_emarsys_targets(source.store, jobs, settings, request)
            with Progress(console) as progress:
                engine = Engine(source, options, RunOptions(dry_run=request.dry_run,
                                                            full_refresh=request.full_refresh,
                                                            allow_mass_removal=request.allow_mass_removal,
                                                            samples=request.samples,
                                                            emarsys=None if settings is None else
                                                            (settings.endpoint, settings.user)),
                                progress, stop=request.stop)
                if request.dry_run:
                    catalog = clients.catalog()
                    if catalog is not None:
                        # What `run` would refuse before sending (an unknown field, a column type the
                        # field can't take) is a configuration error here too, not a failed sync.
                        _check_mappings(engine, project, jobs, catalog)
                    _parallel(threads, jobs, lambda job: engine.preview(job, clients.new(), catalog),
                              engine.cancel)
                else:
                    with _Heartbeat(source, jobs):
                        _run_jobs(engine, project, source, clients, jobs, threads, request)
                for job in jobs:
                    if request.dry_run:
                        # A plan shows --samples examples of every category, rejected rows included.
                        del job.report.rejected_samples[request.samples:]
                    progress.done(job.name, job.report)
            report.syncs += [job.report for job in jobs]
    except KeyboardInterrupt:
        # Interrupted (Ctrl-C, SIGTERM): the syncs stopped and kept what was acknowledged; say so.
        report.syncs += [job.report for job in jobs if job.report.finished]
        report.api_requests = clients.requests
        report.write(project.target_dir)
        raise
    finally:
        report.api_requests = clients.requests
        clients.close()
    if console is not None:
        render(report, console)     # first: if the artifact can't be written, the summary is still seen
    report.write(project.target_dir)
    return report


def problems_error(problems: list[str]) -> ConfigError:
    """Every problem that stops a run, as one error (one problem as it is)."""
    return ConfigError(problems[0] if len(problems) == 1 else
                       f"{len(problems)} problems stop the run:\n  " + "\n  ".join(problems))


def check_emarsys_targets(store, jobs: list[SyncJob], settings: EmarsysSettings, request: RunRequest) -> None:
    """A sync's state holds what one Emarsys acknowledged. Pointed at another (a sandbox's state used
    against production, or one account's against another's), the diff would send nothing the old one
    had: refuse, every such sync at once, before anything is sent. With --full-refresh the run sends
    every row to the new Emarsys and the state follows it."""
    here, bound_by_sync = settings.endpoint, store.bound_targets()
    problems = []
    for job in jobs:
        bound = bound_by_sync.get(job.name)
        if bound is None:
            continue
        there, their_user = bound
        if there != here:
            if request.full_refresh:
                job.rebind = not request.dry_run
                continue
            problems.append(
                f"{job.sync.model.yaml_path}: model {job.sync.model.name}: sync {job.name}: its state "
                f"({store.schema}) holds what {there} acknowledged (API user {their_user}), but this run "
                f"writes to {here}: run with --full-refresh to send every row there (the state then "
                f"follows it), or give this Emarsys its own --state-schema")
        elif their_user != settings.user:
            log.warning("sync %s: its state was acknowledged by API user %s, this run uses %s on the same "
                        "Emarsys (%s); if that user belongs to another Emarsys account, run with --full-refresh",
                        job.name, their_user, settings.user, here)
    if problems:
        raise problems_error(problems)


def no_syncs_selected(project: DbtProject, selected: set[str] | None, select: tuple[str, ...] = (),
                      exclude: tuple[str, ...] = (), selector: str | None = None) -> ConfigError:
    """Why no sync is selected: the selection matched nothing at all (a misspelt name?), or only models
    that declare no sync (named), or the project declares none."""
    if selected is None:
        return ConfigError(f"no model in {project.project_dir} declares config.meta.emarsys")
    flags = " ".join([*([f"--select {' '.join(select)}"] if select else []),
                      *([f"--exclude {' '.join(exclude)}"] if exclude else []),
                      *([f"--selector {selector}"] if selector else [])])
    flags = flags or "the default selector of selectors.yml"
    if not selected:
        names = sorted({n.name for n in project.manifest.nodes.values()
                        if n.resource_type.value in ("model", "snapshot", "seed")})
        plain = [word for word in select if word.replace("_", "").replace(".", "").isalnum()]
        near = difflib.get_close_matches(plain[0], names, n=1) if len(plain) == 1 else []
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return ConfigError(f"the selection ({flags}) matches no model, snapshot or seed of the project{hint}")
    nodes = sorted(project.manifest.nodes[uid].name for uid in selected if uid in project.manifest.nodes)
    shown = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
    return ConfigError(f"the selection ({flags}) matches {len(nodes)} model(s), none of which declares a "
                       f"sync in config.meta.emarsys: {shown}")


def runner_settings_problems(project: DbtProject, env: dict[str, str] | None = None) -> list:
    """The runner's own settings from the environment, checked as `run` would check them (for
    `validate`): EMARSYS_SYNC_DUCKDB_MEMORY_LIMIT on a DuckDB target whose profile sets no memory_limit."""
    import os

    from .dbt.source import DUCKDB_MEMORY_ENV, check_duckdb_memory_limit
    from .spec import Problem

    env = os.environ if env is None else env
    credentials = getattr(project.config, "credentials", None)
    on_duckdb = getattr(credentials, "type", None) == "duckdb"
    profile_sets_it = "memory_limit" in (getattr(credentials, "settings", None) or {})
    memory = (env.get(DUCKDB_MEMORY_ENV) or "").strip()
    if not on_duckdb or profile_sets_it or memory.lower() in ("", "off", "none"):
        return []
    try:
        check_duckdb_memory_limit(memory)
    except ConfigError as exc:
        return [Problem("", "environment", DUCKDB_MEMORY_ENV, str(exc))]
    return []


def _jobs(project: DbtProject, source: DbtWarehouseSource, syncs: list) -> list[SyncJob]:
    """A job per sync, with the model columns it reads; every problem reported at once. Runs while the
    run holds the warehouse (a DuckDB file another process writes is waited for, not a crash)."""
    columns, problems = {}, []
    for sync in syncs:
        try:
            columns[sync.name] = source.columns(sync)
        except ConfigError as exc:
            problems.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - the warehouse's own error, e.g. a broken view
            # A model that can't be read stops the run before anything is sent: never an empty audience.
            problems.append(f"{sync.model.yaml_path}: model {sync.model.name}: sync {sync.name}: the model "
                            f"can't be read: {' '.join(str(exc).split())[:500]}")
    if not problems:
        require_columns(project, syncs)     # the declared columns exist: every problem, as validate words it
    jobs = []
    for sync in syncs if not problems else ():
        try:
            shape = build_shape(sync, columns[sync.name])
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        report = SyncReport(sync.name, sync.model.name, sync.spec.object, sync.spec.behaviour)
        report.start()
        jobs.append(SyncJob(sync, shape, report))
    if problems:
        raise problems_error(problems)
    return jobs


def _check_mappings(engine: Engine, project: DbtProject, jobs: list[SyncJob], catalog: FieldCatalog) -> None:
    """Each job's row mapper against the Emarsys fields, and its columns' types against theirs: every
    problem of every sync at once, as one ConfigError."""
    problems: list[str] = []
    for job in jobs:
        try:
            engine.prepare(job, catalog)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        problems += _off_thread(column_type_problems, project, job.sync, catalog)
    if problems:
        raise problems_error(problems)


def _run_jobs(engine: Engine, project: DbtProject, source: DbtWarehouseSource, clients: _Clients,
              jobs: list[SyncJob], threads: int, request: RunRequest) -> None:
    for job in jobs:
        job.report.full_refresh = request.full_refresh
    try:
        needs_client = request.full_refresh and any(j.is_mirror for j in jobs)
        _parallel(threads, jobs, lambda job: engine.plan(job, clients.new() if needs_client and job.is_mirror
                                                        else None), engine.cancel)
        sending = [job for job in jobs if job.needs_sending]
        if not sending:
            return
        for job in sending:
            engine.progress.phase(job.name, f"reading the Emarsys fields ({clients.settings.base_url})")
        try:
            catalog = clients.catalog()
        except TransientError as exc:
            # Emarsys can't be reached (after the client's retries): every sync that had rows to send
            # fails, with the results file written and its plan given up; the next run plans again.
            reason = f"cannot reach Emarsys at {clients.settings.base_url}: {exc}"
            for job in sending:
                engine.abandon(job, reason, status="failed")
            return
        assert catalog is not None
        _check_mappings(engine, project, sending, catalog)
        source.sending()
        _parallel(threads, sending, lambda job: engine.send(job, clients.new()), engine.cancel)
    finally:
        # Whatever stopped the run (a configuration error, Ctrl-C), no plan stays locked unsent.
        for job in jobs:
            if not job.report.finished:
                try:
                    engine.abandon(job, "not run: the run stopped before this sync was sent")
                except Exception:  # noqa: BLE001 - the next run recovers the plan and takes the lock over
                    log.exception("sync %s: could not give up its plan", job.name)


# -- state inspection and reset (`dbt-emarsys-sync state show|reset`) ----------------------------------


def _state_targets(request: RunRequest, sync_names: tuple[str, ...], include_known: bool):
    """(project, source, sync names, include the state's own): the named syncs, else those of the
    selected models, else (for `show`) every declared sync plus any the state still knows."""
    project = DbtProject(request.dbt_args(), artifacts_dir=request.artifacts_dir).load()
    source = DbtWarehouseSource(project, request.state_schema)
    if sync_names:
        return project, source, list(dict.fromkeys(sync_names)), False
    selected = project.select(request.select, request.exclude)
    declared = [s.name for s in project.syncs(selected)]
    if (request.select or request.exclude) and not declared:
        raise no_syncs_selected(project, selected, request.select, request.exclude, request.selector)
    return project, source, declared, include_known and not (request.select or request.exclude)


def _check_sync_names(project: DbtProject, store, names: list[str]) -> None:
    """Names given with --sync must be syncs the project declares or the state knows (a sync no longer
    declared keeps its state until it is reset): a misspelt name is an error, never "0 rows"."""
    declared, _problems = project.collect_syncs()
    known = sorted({s.name for s in declared} | set(store.known_syncs() if store.exists() else ()))
    unknown = [n for n in names if n not in known]
    if not unknown:
        return
    hints = []
    for name in unknown:
        near = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    raise ConfigError(f"unknown sync {', '.join(hints)}: the syncs declared or with state in "
                      f"{store.schema} are {', '.join(known) or 'none'}")


def show_state(request: RunRequest, sync_names: tuple[str, ...] = (), samples: int = 5) -> dict:
    project, source, names, include_known = _state_targets(request, sync_names, include_known=True)
    with source.hold(request.lock_timeout):
        store = source.store
        if sync_names:
            _check_sync_names(project, store, names)
        result: dict = {"state_schema": store.schema, "exists": store.exists(), "syncs": []}
        if not result["exists"]:
            result["syncs"] = [{"sync": n, "snapshot_rows": 0} for n in names]
            return result
        result["schema_version"] = store.version()
        if include_known:
            names = list(dict.fromkeys(names + store.known_syncs()))
        result["syncs"] = [store.describe(name, samples) for name in names]
    return result


def reset_state(request: RunRequest, sync_names: tuple[str, ...] = (),
                confirm: Callable[[list[str]], None] | None = None) -> dict:
    """Forget what the syncs had acknowledged and rejected: their next run sends every row again.

    `confirm` is shown the sync names before anything is forgotten (it raises to stop); the warehouse
    is not held while it waits for an answer."""
    from .dbt.state import new_run_id

    if not (sync_names or request.select or request.exclude):
        raise ConfigError("say which syncs to reset: --select (dbt selection) or --sync NAME")
    project, source, names, _ = _state_targets(request, sync_names, include_known=False)
    if sync_names:
        with source.hold(request.lock_timeout):
            _check_sync_names(project, source.store, names)
    if confirm is not None:
        confirm(names)
    results = []
    with source.hold(request.lock_timeout):
        store = source.store
        if not store.exists():
            return {"state_schema": store.schema, "syncs": [{"sync": n, "snapshot_rows": 0, "rejected_rows": 0}
                                                            for n in names]}
        for name in names:
            run_id = new_run_id()
            store.acquire_lock(name, run_id, request.lock_timeout, EngineOptions().stale_lock_after)
            try:
                results.append({"sync": name, **store.reset(name)})
            finally:
                store.release_lock(name, run_id)
    return {"state_schema": store.schema, "syncs": results}
