"""How log records reach the terminal: plain "warning: ..." lines at the default level, time, level and
logger with --log-level info or debug."""

import logging

from dbt_emarsys_sync.cli import ConsoleLogFormatter


def _record(msg: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("dbt_emarsys_sync.runner", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_a_warning_at_the_default_level_is_one_plain_line():
    assert ConsoleLogFormatter(detailed=False).format(_record("sync %s: taking over", "a")) == \
        "warning: sync a: taking over"


def test_an_exception_is_its_cause_in_one_line_unless_detailed():
    try:
        raise OSError("disk full")
    except OSError as exc:
        info = (type(exc), exc, exc.__traceback__)
    plain = ConsoleLogFormatter(detailed=False).format(_record("could not refresh", exc_info=info))
    assert plain == "warning: could not refresh (OSError: disk full)"
    detailed = ConsoleLogFormatter(detailed=True).format(_record("could not refresh", exc_info=info))
    assert " WARNING dbt_emarsys_sync.runner: could not refresh\nTraceback" in detailed
