"""Shared fixtures: the emulator on a loopback port, the sample dbt project built in a temp dir, and a
way to run the CLI exactly as a user does (a subprocess with environment variables)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dbt_emarsys_sync.emulator import EmulatorConfig, EmulatorThread

REPO = Path(__file__).resolve().parent.parent
SAMPLE_PROJECT = REPO / "sample_dbt_project"
BIN = Path(sys.executable).parent

# No test reaches beyond loopback: dbt's usage tracking stays off in every dbt the tests start, including
# projects written by tests (the product turns it off for its own in-process dbt commands regardless).
os.environ["DO_NOT_TRACK"] = "1"


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """`dbt-emarsys-sync ARGS` in a subprocess, as a user would type it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EMARSYS_", "DBT_"))}
    full_env.update(env or {})
    proc = subprocess.run([str(BIN / "dbt-emarsys-sync"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_dbt(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_")}
    proc = subprocess.run([str(BIN / "dbt"), *args, "--profiles-dir", str(cwd)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"dbt {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_sample_project(dest: Path) -> Path:
    shutil.copytree(SAMPLE_PROJECT, dest, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    return dest


def emulator_env(emu: EmulatorThread, scheme: str = "oauth") -> dict[str, str]:
    config = emu.emulator.config
    env = {"EMARSYS_API_URL": emu.url, "EMARSYS_AUTH_URL": emu.token_url}
    if scheme == "oauth":
        env.update(EMARSYS_CLIENT_ID=config.client_id, EMARSYS_CLIENT_SECRET=config.client_secret)
    else:
        env.update(EMARSYS_USERNAME=config.username, EMARSYS_SECRET=config.secret)
    return env


@pytest.fixture
def emulator():
    with EmulatorThread(EmulatorConfig(rate_limit=0)) as emu:
        yield emu


@pytest.fixture(scope="session")
def built_sample_project(tmp_path_factory) -> Path:
    """The sample project, copied and built once per session. Tests that change it copy it again."""
    project = copy_sample_project(tmp_path_factory.mktemp("sample") / "sample_dbt_project")
    run_dbt(["build"], cwd=project)
    return project


@pytest.fixture
def sample_project(built_sample_project, tmp_path) -> Path:
    """A private copy of the built sample project (with its DuckDB file and manifest)."""
    dest = tmp_path / "sample_dbt_project"
    shutil.copytree(built_sample_project, dest)
    return dest
