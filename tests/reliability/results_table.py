"""Write the results tables of tests/reliability/README.md from a pytest run's JUnit XML.

    python -m pytest tests/reliability -m reliability -n 2 --junitxml=/tmp/ci.xml
    python -m pytest tests/reliability -m slow -n 2 --junitxml=/tmp/slow.xml
    python -m tests.reliability.results_table /tmp/ci.xml /tmp/slow.xml

Every scenario of the suite gets a row: what it asserts (from the scenario tables in the test modules),
its outcome and duration in the given runs (the last file wins for a scenario run twice), or "not run".
The README's text between the results markers is replaced; the rest is left alone.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def read_results(paths: list[str]) -> tuple[dict[str, tuple[str, float]], list[str]]:
    results: dict[str, tuple[str, float]] = {}
    runs = []
    for path in paths:
        root = ET.parse(path).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        runs.append(f"{suite.get('timestamp', '?')[:16].replace('T', ' ')} UTC: {suite.get('tests')} tests, "
                    f"{suite.get('failures')} failed, {suite.get('errors')} errors, {suite.get('skipped')} skipped, "
                    f"{float(suite.get('time', 0)):.0f} s")
        for case in suite.iter("testcase"):
            name = case.get("name")
            if case.find("skipped") is not None:
                if name not in results:
                    results[name] = ("not run (slow)", 0.0)
                continue
            failed = case.find("failure") is not None or case.find("error") is not None
            results[name] = ("FAILED" if failed else "passed", float(case.get("time", 0)))
    return results, runs


def cell(results: dict, name: str) -> str:
    outcome, seconds = results.get(name, ("not run", 0.0))
    return f"{outcome}, {seconds:.1f} s" if seconds else outcome


def tables(results: dict) -> str:
    from tests.reliability import test_bad_input, test_faults

    out = []
    out.append("### Fault matrix (`test_faults.py::test_fault`)\n")
    behaviours = list(test_faults.BEHAVIOURS)
    out.append("| fault | injected | " + " | ".join(behaviours) + " |")
    out.append("|---|---|" + "---|" * len(behaviours))
    for fault, specs in test_faults.FAULTS.items():
        injected = "; ".join(", ".join(f"{k}={v}" for k, v in spec.items() if k != "type") + f" ({spec['type']})"
                             for spec in specs)
        row = [cell(results, f"test_fault[{b}-{fault}]") for b in behaviours]
        out.append(f"| {fault} | {injected} | " + " | ".join(row) + " |")
    out.append("")
    out.append("| timing fault | " + " | ".join(behaviours) + " |")
    out.append("|---|" + "---|" * len(behaviours))
    out.append("| token revoked mid-run | " + " | ".join(cell(results, f"test_token_expiry_mid_run[{b}]")
                                                     for b in behaviours) + " |")
    for skew in (400, -400):
        out.append(f"| WSSE clock skew {skew:+d} s | " + " | ".join(
            cell(results, f"test_wsse_clock_skew[{b}-{skew}]") for b in behaviours) + " |")
    out.append("| read-after-write lag | " + " | ".join(
        cell(results, f"test_read_after_write_lag_{b}") for b in behaviours) + " |")
    out.append("")
    out.append("### Bad input corpus (`test_bad_input.py`)\n")
    out.append("| case | input | expected | result |")
    out.append("|---|---|---|---|")
    for case in test_bad_input.CASES:
        if case.exit_code == 2:
            expected = f"exit 2, error names `{case.error}`, nothing written"
        elif case.exit_code == 3:
            expected = f"exit 3, error names `{case.error}`"
        elif case.rejected:
            codes = sorted({code for code, _ in case.rejected.values()})
            expected = f"exit {case.exit_code}, {len(case.rejected)} key(s) rejected ({', '.join(codes)}), the rest exact"
        else:
            expected = f"exit {case.exit_code}, every row exact in Emarsys"
        out.append(f"| {case.id} | {case.what} | {expected} | {cell(results, f'test_bad_input[{case.id}]')} |")
    out.append(f"| corpus size | at least 40 cases, ids unique ({len(test_bad_input.CASES)} cases) | | "
               f"{cell(results, 'test_corpus_size')} |")
    out.append("")
    out.append("### Crash, secrets, TLS, load\n")
    out.append("| scenario | result |")
    out.append("|---|---|")
    for name in ("test_crash_contacts", "test_crash_mirror", "test_crash_contacts_full", "test_crash_mirror_full",
                 "test_no_command_prints_or_stores_a_secret", "test_client_objects_and_errors_carry_no_secret",
                 "test_tls_is_verified_and_a_ca_bundle_is_the_way_in", "test_no_code_turns_tls_verification_off",
                 "test_two_concurrent_runs_duckdb", "test_two_concurrent_runs_postgres",
                 "test_twenty_syncs_share_one_rate_limit", "test_twenty_syncs_learn_an_unknown_rate_limit"):
        out.append(f"| `{name}` | {cell(results, name)} |")
    return "\n".join(out)


def main(paths: list[str]) -> None:
    results, runs = read_results(paths)
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join([START, f"Runs (tables written {written}):", ""] + [f"- {r}" for r in runs] + ["", tables(results),
                                                                                                  END])
    text = README.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    README.write_text(head + body + tail)


if __name__ == "__main__":
    main(sys.argv[1:])
