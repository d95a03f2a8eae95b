"""Helpers of the dbt-facing tests: run dbt in a project, copy a fixture project, load it in-process."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import BIN, REPO

FIXTURES = REPO / "tests" / "fixtures" / "projects"

def dbt(args: list[str], project: Path, *, ok: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`dbt ARGS` in the project, as a user runs it. `ok=False`: the command is expected to fail (exit 1)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_")}
    full_env.update(env or {})
    proc = subprocess.run([str(BIN / "dbt"), *args, "--profiles-dir", str(project)], cwd=project,
                          env=full_env, capture_output=True, text=True, timeout=300)
    expected = 0 if ok else 1
    if proc.returncode != expected:
        raise AssertionError(f"dbt {' '.join(args)} exited {proc.returncode}, expected {expected}:\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return proc


def copy_project(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("logs", "dbt_packages", "*.wal"))
    return dest


def load(project: Path, **kwargs):
    """The project as the runner loads it (in-process dbt)."""
    from dbt_emarsys_sync.dbt.project import DbtArgs, DbtProject

    artifacts_dir = kwargs.pop("artifacts_dir", None)
    return DbtProject(DbtArgs(project_dir=str(project), **kwargs), artifacts_dir=artifacts_dir).load()


def line_of(path: Path, text: str, start: int = 0) -> int:
    """The 1-based line of the first line containing `text` after line `start`."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if number > start and text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")
