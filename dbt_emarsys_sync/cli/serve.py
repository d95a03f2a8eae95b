"""`serve`: the dbt Cloud webhook receiver."""

from __future__ import annotations

import signal
import sys

import click

from . import dbt_options, error, guard, main, parse_vars, split_selection


@main.command()
@dbt_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 in a container, behind a TLS reverse proxy).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--log-format", default="text", show_default=True, envvar="EMARSYS_SYNC_LOG_FORMAT",
              type=click.Choice(["text", "json"]), help="json: one JSON object per line.")
@click.option("--max-body-bytes", default=256 * 1024, show_default=True, type=click.IntRange(1024),
              help="Larger deliveries are refused (413).")
@click.option("--queue-size", default=100, show_default=True, type=click.IntRange(1),
              help="Deliveries waiting for a sync at most; more are answered 503 (dbt Cloud retries).")
def serve(project_dir, profiles_dir, target, profile, vars_, select, exclude, selector, host, port,
          log_format, max_body_bytes, queue_size) -> None:
    """Sync after dbt Cloud jobs: receive dbt Cloud's job webhooks and sync the models each run built.

    Settings come from the environment: DBT_CLOUD_WEBHOOK_SECRET, DBT_CLOUD_API_TOKEN,
    DBT_CLOUD_ACCOUNT_ID, DBT_CLOUD_URL, optional DBT_CLOUD_JOB_IDS, DBT_CLOUD_ENVIRONMENT_IDS and
    DBT_CLOUD_SYNC_AFTER_FAILED_RUNS, plus the Emarsys settings of `run`. The dbt project (--project-dir)
    gives the profile that reaches the warehouse, with the service's own credentials.
    """
    import uvicorn

    from ..cloud.ledger import WarehouseDeliveryLedger
    from ..cloud.logs import RunLogContext, configure
    from ..cloud.service import ServiceOptions, WebhookService
    from ..cloud.settings import ServiceSettings
    from ..emarsys import EmarsysSettings
    from ..runner import RunRequest

    settings = guard(ServiceSettings.from_env)
    emarsys_settings = guard(EmarsysSettings.from_env)
    request = RunRequest(project_dir=project_dir, profiles_dir=profiles_dir, target=target, profile=profile,
                         vars=guard(lambda: parse_vars(vars_)), select=split_selection(select),
                         exclude=split_selection(exclude), selector=selector)
    project = request.dbt_args().resolved_project_dir()
    if not (project / "dbt_project.yml").exists():
        error(f"no dbt project at {project} (dbt_project.yml not found): the service needs the project "
              "for its profile; pass --project-dir or set DBT_PROJECT_DIR")
        sys.exit(2)

    context = RunLogContext()
    configure(context, fmt=log_format, level=_log_level(), secrets=[*settings.secrets(),
              emarsys_settings.client_secret or "", emarsys_settings.secret or ""])
    ledger = WarehouseDeliveryLedger(request.dbt_args(), schema=request.state_schema)
    service = WebhookService(settings, request, ledger,
                             options=ServiceOptions(max_body_bytes=max_body_bytes, queue_size=queue_size),
                             log_context=context, emarsys_settings=emarsys_settings)
    # uvicorn shuts down gracefully on SIGTERM, then raises it again for the handler found at start:
    # make that a clean exit, so a container stop doesn't read as a crash.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # log_config=None: uvicorn's own lines go through the handler configured above.
    uvicorn.run(service.app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
                timeout_graceful_shutdown=10)


def _log_level() -> str:
    """The group's --log-level when given; otherwise info (a service should say what it did)."""
    from click.core import ParameterSource

    parent = click.get_current_context().parent
    if parent is not None and parent.get_parameter_source("log_level") not in (None, ParameterSource.DEFAULT):
        return parent.params["log_level"]
    return "info"
