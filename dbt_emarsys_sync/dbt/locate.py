"""Where a meta key was declared, and the line of every key under it.

dbt's manifest says which YAML file patched a model, not where in it (or whether the meta came from
that file at all: dbt_project.yml `+meta` and SQL `config(meta=...)` also set it). This module re-reads
the candidate files with PyYAML's composer, which keeps line numbers, so a problem can point at
`models/marts/_marts.yml:14`. Best effort: a file that can't be read or parsed gives no lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..spec import Source

RESOURCE_SECTIONS = {"model": "models", "snapshot": "snapshots", "seed": "seeds"}


@dataclass
class YamlFiles:
    """Composed YAML documents of one project, read once per file."""

    root: Path
    _cache: dict[Any, Any] = field(default_factory=dict)

    def node(self, relative: str) -> Any:
        if relative not in self._cache:
            self._cache[relative] = _compose(self.root / relative)
        return self._cache[relative]

    def text(self, relative: str) -> str | None:
        if ("text", relative) not in self._cache:
            try:
                self._cache[("text", relative)] = (self.root / relative).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self._cache[("text", relative)] = None
        return self._cache[("text", relative)]

    def env_vars(self, relative: str, key_node: Any, value_node: Any) -> tuple[tuple[str, int], ...]:
        """`env_var('NAME')` calls in the raw text from `key_node` to the end of `value_node`, with
        their lines: dbt renders them before the manifest is written, so the value alone can't say."""
        text = self.text(relative)
        if not text:
            return ()
        start, end = key_node.start_mark.index, value_node.end_mark.index
        return tuple((match.group(2), text.count("\n", 0, match.start()) + 1)
                     for match in _ENV_VAR_CALL.finditer(text, start, end))


_ENV_VAR_CALL = re.compile(r"""env_var\s*\(\s*(['"])([^'"]+)\1""")


def _compose(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.compose(handle, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def key_lines(node: Any, prefix: str) -> dict[str, int]:
    """{key path: 1-based line} for a composed YAML node, paths in `emarsys.syncs[0].key` form."""
    lines: dict[str, int] = {}

    def walk(current: Any, path: str) -> None:
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                child = f"{path}.{key_node.value}"
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                child = f"{path}[{index}]"
                lines[child] = item.start_mark.line + 1
                walk(item, child)

    walk(node, prefix)
    return lines


def _get(node: Any, key: str) -> tuple[Any, Any]:
    """(key node, value node) of `key` in a mapping node."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if getattr(key_node, "value", None) == key:
                return key_node, value_node
    return None, None


def _scalar(node: Any) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _source(files: YamlFiles, path: str, meta_key: str, key_node: Any, value_node: Any) -> Source:
    lines = key_lines(value_node, meta_key)
    lines[meta_key] = key_node.start_mark.line + 1
    return Source(path, meta_key, lines, files.env_vars(path, key_node, value_node))


def _scopes(files: YamlFiles, path: str, resource_type: str, name: str, version: str | None) -> list:
    """The resource's entries in a YAML file, most specific first (its version's, then its own)."""
    _, entries = _get(files.node(path), RESOURCE_SECTIONS.get(resource_type, "models"))
    if not isinstance(entries, yaml.SequenceNode):
        return []
    scopes = []
    for entry in entries.value:
        _, name_node = _get(entry, "name")
        if _scalar(name_node) != name:
            continue
        if version is not None:
            _, versions = _get(entry, "versions")
            for item in getattr(versions, "value", []) if isinstance(versions, yaml.SequenceNode) else []:
                _, v_node = _get(item, "v")
                if _scalar(v_node) == str(version):
                    scopes.append(item)
        scopes.append(entry)
    return scopes


def in_properties_file(files: YamlFiles, path: str, resource_type: str, name: str, version: str | None,
                       meta_key: str) -> Source | None:
    """`meta_key` under the resource's `config.meta` (or the older top-level `meta`) in a YAML file."""
    for scope in _scopes(files, path, resource_type, name, version):
        for parent in (_get(_get(scope, "config")[1], "meta")[1], _get(scope, "meta")[1]):
            key_node, value_node = _get(parent, meta_key)
            if key_node is not None:
                return _source(files, path, meta_key, key_node, value_node)
    return None


def config_key_line(files: YamlFiles, path: str, resource_type: str, name: str, version: str | None,
                    key: str) -> int | None:
    """The line of a custom key written straight under the resource's `config` (not under `meta`): in
    a YAML file `config: {key: ...}`, in a SQL file `config(key=...)`, in dbt_project.yml `+key:`."""
    if path.endswith((".sql", ".py")):
        text = files.text(path) or ""
        match = re.search(rf"\b{re.escape(key)}\s*=", text)
        return text.count("\n", 0, match.start()) + 1 if match else None
    for scope in _scopes(files, path, resource_type, name, version):
        key_node, _ = _get(_get(scope, "config")[1], key)
        if key_node is not None:
            return key_node.start_mark.line + 1
    return None


def project_config_key_line(files: YamlFiles, resource_type: str, fqn: list[str], key: str) -> int | None:
    """The line of the most specific `+key:` on the resource's path in dbt_project.yml."""
    _, node = _get(files.node("dbt_project.yml"), RESOURCE_SECTIONS.get(resource_type, "models"))
    found = None
    for part in [None, *fqn]:
        if part is not None:
            _, node = _get(node, part)
            if node is None:
                break
        key_node, _ = _get(node, f"+{key}")
        if key_node is not None:
            found = key_node.start_mark.line + 1
    return found


def in_project_file(files: YamlFiles, resource_type: str, fqn: list[str], meta_key: str) -> Source | None:
    """The most specific `+meta: {meta_key: ...}` on the resource's path in dbt_project.yml."""
    doc = files.node("dbt_project.yml")
    _, node = _get(doc, RESOURCE_SECTIONS.get(resource_type, "models"))
    found = None
    for part in [None, *fqn]:
        if part is not None:
            _, node = _get(node, part)
            if node is None:
                break
        for meta_name in ("+meta", "meta"):
            key_node, value_node = _get(_get(node, meta_name)[1], meta_key)
            if key_node is not None:
                found = _source(files, "dbt_project.yml", meta_key, key_node, value_node)
    return found


_QUOTED = "(['\"]){key}\\1"


def in_sql_file(files: YamlFiles, path: str, meta_key: str) -> Source | None:
    """`config(meta={'emarsys': ...})` in a SQL file: the line of the key (no deeper lines)."""
    text = files.text(path)
    if not text or "config" not in text or "meta" not in text:
        return None
    match = re.search(_QUOTED.format(key=re.escape(meta_key)), text)
    if match is None:
        return None
    return Source(path, meta_key, {meta_key: text.count("\n", 0, match.start()) + 1})


def in_vars(files: YamlFiles, project_name: str, var_name: str) -> Source | None:
    """`vars: {emarsys: ...}` (global or scoped to the root project) in dbt_project.yml."""
    doc = files.node("dbt_project.yml")
    _, variables = _get(doc, "vars")
    for scope, prefix in ((_get(variables, project_name)[1], f"vars.{project_name}"), (variables, "vars")):
        key_node, value_node = _get(scope, var_name)
        if key_node is not None:
            lines = key_lines(value_node, f"{prefix}.{var_name}")
            lines[f"{prefix}.{var_name}"] = key_node.start_mark.line + 1
            return Source("dbt_project.yml", f"{prefix}.{var_name}", lines,
                          files.env_vars("dbt_project.yml", key_node, value_node))
    return None
