"""Gating on the last build: which models may sync, and why the others may not.

A model syncs only when the last `dbt build` (or `run`, `snapshot`, `seed`, `retry`) shows it
succeeded and none of its tests (manifest `child_map` test nodes) failed or errored. dbt's
`run_results.json` is read as plain JSON (dbt-notes.md §3): Fusion writes fields dbt-core's classes
refuse, and a missing key is normal.

Problems that concern the whole run (no run_results.json; it was overwritten by `dbt compile`, `test`,
`docs generate`...; the build was for another target) raise `BuildResultsError`: nothing is synced
and the message says what to run. Problems of one model skip that model, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError

# The commands whose run_results.json tells whether models built.
BUILD_COMMANDS = ("build", "run", "snapshot", "seed", "retry")
# The only model status that means "built, completely": `partial success` (a microbatch model with
# failed batches) holds partial data, and `error`/`skipped` mean the relation is stale or missing.
BUILT = "success"
FAILED_TEST = ("fail", "error")
TEST_PREFIXES = ("test.", "unit_test.")
# run_results `args.which` -> the command as typed.
_COMMANDS = {"generate": "docs generate", "serve": "docs serve"}


class BuildResultsError(ConfigError):
    """The last build's results can't be used to decide what may sync."""


@dataclass(frozen=True)
class BuildResults:
    """The parts of run_results.json gating needs."""

    path: str
    command: str | None
    generated_at: str | None
    target: str | None
    statuses: dict[str, tuple[str, str | None, int | None]]   # unique_id -> (status, message, failures)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: str) -> "BuildResults":
        args = data.get("args") or {}
        metadata = data.get("metadata") or {}
        statuses = {}
        for result in data.get("results") or []:
            uid = result.get("unique_id")
            if uid:
                statuses[uid] = (str(result.get("status") or ""), result.get("message"),
                                 result.get("failures"))
        which = args.get("which")
        return cls(path=path, command=_COMMANDS.get(which, which), generated_at=metadata.get("generated_at"),
                   target=args.get("target"), statuses=statuses)

    def describe(self) -> str:
        when = f" at {self.generated_at}" if self.generated_at else ""
        return f"the last `dbt {self.command or '?'}`{when}"


@dataclass
class Gate:
    """The decision for each model: allowed, or skipped with a reason."""

    allowed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    results: BuildResults | None = None
    ignored: bool = False

    def allows(self, unique_id: str) -> bool:
        return unique_id in self.allowed

    def reason(self, unique_id: str) -> str | None:
        return self.skipped.get(unique_id)


def gate(project: Any, models: Iterable[Any], *, ignore_build_results: bool = False) -> Gate:
    """Decide for `models` (ModelRefs) from the project's last build (`project.artifacts_path`)."""
    models = list(models)
    if ignore_build_results:
        return Gate(allowed=[m.unique_id for m in models], ignored=True)
    path = Path(project.artifacts_path) / "run_results.json"
    data = project.run_results()
    if data is None:
        raise BuildResultsError(
            f"{path} not found: run `dbt build` before syncing (a model syncs only when its last build "
            "succeeded and its tests passed), or pass --ignore-build-results")
    results = BuildResults.from_json(data, str(path))
    if project.artifacts_dir:
        # The build's own manifest names the relations it built, whatever the local target is called
        # (a dbt Cloud job's target name needn't match the profile the sync reads with).
        return decide(results, project.child_map(), models)
    return decide(results, project.child_map(), models, expected_target=project.target_name,
                  default_target=project.default_target_name())


def decide(results: BuildResults, child_map: Mapping[str, Iterable[str]], models: Iterable[Any], *,
           expected_target: str | None = None, default_target: str | None = None) -> Gate:
    """The pure decision. `models` need `unique_id` and `selector` (how `--select` names them)."""
    if results.command not in BUILD_COMMANDS:
        raise BuildResultsError(
            f"{results.path} is from `dbt {results.command or '?'}`"
            f"{' at ' + results.generated_at if results.generated_at else ''}, which overwrote the build's "
            "results: it doesn't say whether the models built. Run `dbt build` right before syncing, "
            "point --artifacts-dir at a copy of the build's target/ directory, or pass "
            "--ignore-build-results")
    # run_results names the target only when it was chosen (--target, DBT_TARGET); otherwise the build
    # used the profile's default target.
    built_for = results.target or default_target
    if built_for is not None and expected_target is not None and built_for != expected_target:
        raise BuildResultsError(
            f"{results.describe()} built target {built_for!r}, this run reads target {expected_target!r}: "
            f"sync with --target {built_for}, build target {expected_target!r} first, or pass "
            "--ignore-build-results")

    gate_result = Gate(results=results)
    for model in models:
        reason = _reason(results, child_map, model)
        if reason is None:
            gate_result.allowed.append(model.unique_id)
        else:
            gate_result.skipped[model.unique_id] = reason
    return gate_result


def _reason(results: BuildResults, child_map: Mapping[str, Iterable[str]], model: Any) -> str | None:
    uid = model.unique_id
    last = results.describe()
    if uid not in results.statuses:
        return f"not built by {last}; build it first: `dbt build --select {model.selector}`"
    status, message, _ = results.statuses[uid]
    if status == "error":
        return f"the model failed in {last}: {_first_line(message)}"
    if status == "skipped":
        return f"dbt skipped the model in {last} (an upstream model or test failed)"
    if status == "partial success":
        return f"the model was only partly built in {last} (some batches failed)"
    if status != BUILT:
        return f"the model's status in {last} is {status!r}"
    failed = []
    for child in sorted(child_map.get(uid, ())):
        if not child.startswith(TEST_PREFIXES) or child not in results.statuses:
            continue
        test_status, test_message, failures = results.statuses[child]
        if test_status == "fail":
            failed.append(f"{_test_name(child)} (" + (f"{failures} failing row{'s' if failures != 1 else ''})"
                                                      if failures else "failed)"))
        elif test_status == "error":
            failed.append(f"{_test_name(child)} (error: {_first_line(test_message)})")
    if failed:
        return f"test{'s' if len(failed) > 1 else ''} failed in {last}: {', '.join(failed)}"
    return None


def _test_name(unique_id: str) -> str:
    # test.<package>.<name>.<hash>, unit_test.<package>.<model>.<name>
    parts = unique_id.split(".")
    if parts[0] == "unit_test" and len(parts) >= 4:
        return parts[3]
    return parts[2] if len(parts) >= 3 else unique_id


def _first_line(message: Any) -> str:
    text = " ".join(str(message or "no message").split())
    return text if len(text) <= 300 else text[:297] + "..."
