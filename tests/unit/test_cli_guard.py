"""The CLI's error guard: every failure ends in a one-line error and the documented exit code."""

import pytest

from dbt_emarsys_sync.cli import guard
from dbt_emarsys_sync.errors import EXIT_FAILED


def test_an_unexpected_exception_is_exit_3_with_its_traceback(capsys):
    def broken():
        raise RuntimeError("boom in the engine")

    with pytest.raises(SystemExit) as exit_info:
        guard(broken)
    assert exit_info.value.code == EXIT_FAILED == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom in the engine" in err
    assert "unexpected internal error" in err


def test_click_exits_pass_through():
    import click

    def usage():
        raise click.UsageError("bad option")

    with pytest.raises(click.UsageError):
        guard(usage)


def test_a_normal_result_is_returned():
    assert guard(lambda: 42) == 42
