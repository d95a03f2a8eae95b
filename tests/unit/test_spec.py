"""Declarations in config.meta.emarsys -> SyncSpec: the schema table-driven (valid and invalid, with the
expected message), defaults merging, Jinja rendering, refused secrets, and problem placement."""

from __future__ import annotations

import pytest

from dbt_emarsys_sync.spec import (Declaration, JinjaRenderer, ModelRef, ProjectDefaults, Source, SpecError,
                                   collect_declarations, deep_merge, parse_declarations, parse_model_meta,
                                   parse_project_settings)

pytestmark = pytest.mark.dbt

MODEL = ModelRef("model.shop.contacts", "contacts", '"db"."main"."contacts"', "models/contacts.yml")
OTHER = ModelRef("model.shop.others", "others", '"db"."main"."others"', "models/others.yml")


def sync(**overrides):
    base = {"name": "contacts", "object": "contact", "behaviour": "update_or_create",
            "key": {"column": "email", "field": "email"}, "fields": {"first_name": "first_name"}}
    base.update(overrides)
    return base


def without(key):
    return {k: v for k, v in sync().items() if k != key}


# -- valid declarations -------------------------------------------------------------------------------

VALID = [
    ("the shortest declaration", {"syncs": [{"name": "s", "key": {"column": "email"}}]},
     {"object": "contact", "behaviour": "update_or_create", "null_policy": "skip"}),
    ("field by id", {"syncs": [sync(fields={"first_name": 1})]}, {"fields": {"first_name": 1}}),
    ("field by name with spaces", {"syncs": [sync(fields={"tier": "Loyalty Tier"})]},
     {"fields": {"tier": "Loyalty Tier"}}),
    ("a contact list mirror", {"syncs": [sync(object="contact_list", behaviour="mirror", list="VIP")]},
     {"list": "VIP", "behaviour": "mirror"}),
    ("update_only keyed by the contact id",
     {"syncs": [sync(behaviour="update_only", key={"column": "contact_id", "field": "id"})]},
     {"behaviour": "update_only"}),
    ("constants and null policy", {"syncs": [sync(constants={"source": "dbt", 5003: "Gold"},
                                                  null_policy="clear")]},
     {"null_policy": "clear"}),
    ("a time zone", {"syncs": [sync(timezone="Europe/Berlin")]}, {"timezone": "Europe/Berlin"}),
    ("safety limits", {"syncs": [sync(object="contact_list", behaviour="mirror", list="L",
                                      safety={"max_removal_share": 0.5, "allow_empty": True})]},
     {"safety": {"max_removal_share": 0.5, "allow_empty": True}}),
    ("disabled", {"syncs": [sync(enabled=False)]}, {"enabled": False}),
    ("several syncs", {"syncs": [sync(), sync(name="second")]}, {}),
]


@pytest.mark.parametrize("meta, expected", [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_declarations(meta, expected):
    syncs, problems = parse_model_meta(MODEL, meta)
    assert problems == []
    assert len(syncs) == len(meta["syncs"])
    dumped = syncs[0].spec.model_dump()
    for key, value in expected.items():
        assert dumped[key] == value


def test_defaults_are_the_safe_ones():
    spec = parse_model_meta(MODEL, {"syncs": [{"name": "s", "key": {"column": "email"}}]})[0][0].spec
    assert spec.null_policy == "skip"          # never wipe Emarsys data by accident
    assert spec.key.field == "email" and spec.normalize_email is True and spec.truncate_text is False
    assert spec.safety.max_removal_share == 0.2 and spec.safety.allow_empty is False
    assert spec.enabled is True


# -- invalid declarations: (meta, key path, exact message) --------------------------------------------

INVALID = [
    ("misspelt key", {"syncs": [sync(behavior="mirror")]}, "emarsys.syncs[0].behavior",
     "unknown key 'behavior'; did you mean 'behaviour'?"),
    ("wrong value", {"syncs": [sync(behaviour="upsert")]}, "emarsys.syncs[0].behaviour",
     "expected one of 'update_or_create', 'update_only', 'mirror', got 'upsert'"),
    ("misspelt value", {"syncs": [sync(behaviour="mirorr", object="contact_list", list="L")]},
     "emarsys.syncs[0].behaviour",
     "expected one of 'update_or_create', 'update_only', 'mirror', got 'mirorr'; did you mean 'mirror'?"),
    ("misspelt object", {"syncs": [sync(object="contacts")]}, "emarsys.syncs[0].object",
     "expected one of 'contact', 'contact_list', got 'contacts'; did you mean 'contact'?"),
    ("misspelt nested key", {"syncs": [sync(key={"column": "email", "feild": 3})]}, "emarsys.syncs[0].key.feild",
     "unknown key 'feild'; did you mean 'field'?"),
    ("misspelt safety key", {"syncs": [sync(safety={"max_removal": 0.1})]}, "emarsys.syncs[0].safety.max_removal",
     "unknown key 'max_removal'; did you mean 'max_removal_share'?"),
    ("missing key", {"syncs": [without("key")]}, "emarsys.syncs[0].key", "required key is missing"),
    ("missing key column", {"syncs": [sync(key={"field": "email"})]}, "emarsys.syncs[0].key.column",
     "required key is missing"),
    ("missing name", {"syncs": [without("name")]}, "emarsys.syncs[0].name", "required key is missing"),
    ("list without list name", {"syncs": [sync(object="contact_list", behaviour="mirror")]}, "emarsys.syncs[0]",
     "a contact_list sync needs 'list': the name of the Emarsys contact list"),
    ("list name on a contact sync", {"syncs": [sync(list="VIP")]}, "emarsys.syncs[0]",
     "'list' is only for contact_list syncs (object: contact_list)"),
    ("mirror of contacts", {"syncs": [sync(behaviour="mirror")]}, "emarsys.syncs[0]",
     "behaviour 'mirror' needs object 'contact_list'"),
    ("list that isn't a mirror", {"syncs": [sync(object="contact_list", list="L")]}, "emarsys.syncs[0]",
     "a contact_list sync has behaviour 'mirror'"),
    ("id key that may create", {"syncs": [sync(key={"column": "contact_id", "field": "id"})]}, "emarsys.syncs[0]",
     "the Emarsys contact id can only be the key of an update_only sync (Emarsys cannot create contacts "
     "keyed by id)"),
    ("bad name", {"syncs": [sync(name="has space")]}, "emarsys.syncs[0].name",
     "'has space' is not a valid sync name: use letters, digits and '_', starting with a letter or '_'"),
    ("no syncs", {"syncs": []}, "emarsys.syncs", "should have at least 1 sync"),
    ("syncs misspelt", {"sync": [sync()]}, "emarsys.sync", "unknown key 'sync'; did you mean 'syncs'?"),
    ("a sync without the list around it", sync(), "emarsys",
     "a model's syncs go in a list under `syncs`: `emarsys: {syncs: [{name: ..., key: ...}]}`"),
    ("emarsys is not a mapping", ["x"], "emarsys", "expected a mapping with a list of `syncs`, got a list"),
    ("syncs is not a list", {"syncs": {"name": "x"}}, "emarsys.syncs", "expected a list of syncs, got a mapping"),
    ("a sync is not a mapping", {"syncs": ["contacts"]}, "emarsys.syncs[0]", "expected a mapping, got a string"),
    ("fields as a list", {"syncs": [sync(fields=["first_name"])]}, "emarsys.syncs[0].fields",
     "expected a mapping, got a list"),
    ("a field that is a boolean", {"syncs": [sync(fields={"first_name": True})]},
     "emarsys.syncs[0].fields.first_name",
     "an Emarsys field is an id (number), a string id or a name, got a boolean"),
    ("an empty field", {"syncs": [sync(fields={"first_name": " "})]}, "emarsys.syncs[0].fields.first_name",
     "an Emarsys field is an id (number), a string id or a name, got an empty string"),
    ("null policy misspelt", {"syncs": [sync(null_policy="clean")]}, "emarsys.syncs[0].null_policy",
     "expected one of 'skip', 'clear', got 'clean'; did you mean 'clear'?"),
    ("unknown time zone", {"syncs": [sync(timezone="Europe/Berln")]}, "emarsys.syncs[0].timezone",
     "unknown time zone 'Europe/Berln'; did you mean 'Europe/Berlin'?"),
    ("share over 1", {"syncs": [sync(safety={"max_removal_share": 1.5})]},
     "emarsys.syncs[0].safety.max_removal_share", "safety.max_removal_share must be between 0 and 1, got 1.5"),
    ("negative share", {"syncs": [sync(safety={"max_removal_share": -1})]},
     "emarsys.syncs[0].safety.max_removal_share", "safety.max_removal_share must be between 0 and 1, got -1"),
    ("share as text", {"syncs": [sync(safety={"max_removal_share": "ten percent"})]},
     "emarsys.syncs[0].safety.max_removal_share", "safety.max_removal_share must be a number, got 'ten percent'"),
    ("enabled as text", {"syncs": [sync(enabled="sometimes")]}, "emarsys.syncs[0].enabled",
     "enabled must be true or false, got 'sometimes'"),
    ("empty list name", {"syncs": [sync(object="contact_list", behaviour="mirror", list="")]},
     "emarsys.syncs[0].list", "list must not be empty"),
    ("key as a column name", {"syncs": [sync(key="email")]}, "emarsys.syncs[0].key",
     "expected a mapping, got a string (write `key: {column: <the model's key column>}`)"),
    ("key column as a number", {"syncs": [sync(key={"column": 5})]}, "emarsys.syncs[0].key.column",
     "key.column must be text, got a number"),
    ("time zone as a number", {"syncs": [sync(timezone=1)]}, "emarsys.syncs[0].timezone",
     "timezone must be text, got a number"),
]


@pytest.mark.parametrize("meta, key, message", [v[1:] for v in INVALID], ids=[v[0] for v in INVALID])
def test_invalid_declarations_name_the_key_path_and_say_what_is_wrong(meta, key, message):
    syncs, problems = parse_model_meta(MODEL, meta)
    assert syncs == []
    assert [(p.key, p.message) for p in problems] == [(key, message)]
    assert problems[0].path == "models/contacts.yml" and problems[0].model == "contacts"


@pytest.mark.parametrize("declared, expected", [
    # A key misspelt: `behaviour` is then the default, which a contact list can't have; `list` is missing.
    (sync(object="contact_list", behavior="mirror"),
     [("emarsys.syncs[0].behavior", "unknown key 'behavior'; did you mean 'behaviour'?"),
      ("emarsys.syncs[0]", "a contact_list sync has behaviour 'mirror'; a contact_list sync needs 'list': the "
                           "name of the Emarsys contact list")]),
    (sync(list="VIP", safety={"max_removal_share": 1.5}),
     [("emarsys.syncs[0].safety.max_removal_share", "safety.max_removal_share must be between 0 and 1, got 1.5"),
      ("emarsys.syncs[0]", "'list' is only for contact_list syncs (object: contact_list)")]),
    (sync(key={"column": "contact_id", "field": "id"}, null_policy="clean"),
     [("emarsys.syncs[0].null_policy", "expected one of 'skip', 'clear', got 'clean'; did you mean 'clear'?"),
      ("emarsys.syncs[0]", "the Emarsys contact id can only be the key of an update_only sync (Emarsys cannot "
                           "create contacts keyed by id)")]),
    # A value misspelt: its own error says enough, no check that would need it adds a guess.
    (sync(object="contact_list", behaviour="mirorr", list="L"),
     [("emarsys.syncs[0].behaviour", "expected one of 'update_or_create', 'update_only', 'mirror', got 'mirorr'; "
                                     "did you mean 'mirror'?")]),
    (sync(object="contact_lists", list="L"),
     [("emarsys.syncs[0].object", "expected one of 'contact', 'contact_list', got 'contact_lists'; did you mean "
                                  "'contact_list'?")]),
])
def test_how_keys_fit_together_is_checked_even_when_another_key_is_wrong(declared, expected):
    syncs, problems = parse_model_meta(MODEL, {"syncs": [declared]})
    assert syncs == []
    assert sorted((p.key, p.message) for p in problems) == sorted(expected)


def test_every_problem_of_every_model_is_reported_at_once():
    with pytest.raises(SpecError) as info:
        parse_declarations([(MODEL, {"syncs": [sync(behavior="x", null_policy="never")]}),
                            (OTHER, {"syncs": [sync(name="ok", key={})]})])
    text = str(info.value)
    assert "models/contacts.yml: model contacts: emarsys.syncs[0].behavior: unknown key" in text
    assert "models/contacts.yml: model contacts: emarsys.syncs[0].null_policy: expected one of" in text
    assert "models/others.yml: model others: emarsys.syncs[0].key.column: required key is missing" in text
    assert len(info.value.problems) == 3


def test_two_syncs_with_one_name_are_refused():
    with pytest.raises(SpecError, match="sync name 'contacts' is also used by model contacts"):
        parse_declarations([(MODEL, {"syncs": [sync()]}), (OTHER, {"syncs": [sync()]})])


def test_two_mirrors_of_one_list_are_refused_whatever_the_case_or_spaces():
    mirror = dict(object="contact_list", behaviour="mirror")
    with pytest.raises(SpecError) as info:
        parse_declarations([(MODEL, {"syncs": [sync(name="a", list="VIP", **mirror)]}),
                            (OTHER, {"syncs": [sync(name="b", list=" vip ", **mirror)]})])
    [problem] = info.value.problems
    assert problem.key == "emarsys.syncs[0].list" and problem.model == "others"
    assert problem.message.startswith("list ' vip ' is also mirrored by sync a (model contacts): each would "
                                      "remove the other's members")
    # A disabled one, or lists of their own, are fine.
    parse_declarations([(MODEL, {"syncs": [sync(name="a", list="VIP", **mirror)]}),
                        (OTHER, {"syncs": [sync(name="b", list="VIP", enabled=False, **mirror),
                                           sync(name="c", list="VIP 2", **mirror)]})])


def test_problems_carry_the_line_of_the_key():
    lines = {"emarsys": 7, "emarsys.syncs": 8, "emarsys.syncs[0]": 9, "emarsys.syncs[0].behavior": 12}
    source = Source("models/contacts.yml", "emarsys", lines)
    _, problems = parse_model_meta(MODEL, {"syncs": [sync(behavior="x", key={"column": "e", "feld": 1})]},
                                   source=source)
    by_key = {p.key: p for p in problems}
    assert by_key["emarsys.syncs[0].behavior"].line == 12
    # No line recorded for the key itself: the nearest parent that has one.
    assert by_key["emarsys.syncs[0].key.feld"].line == 9
    assert str(by_key["emarsys.syncs[0].behavior"]).startswith("models/contacts.yml:12: model contacts: ")


# -- defaults -----------------------------------------------------------------------------------------


def project_defaults(defaults, path="dbt_project.yml"):
    project, problems = parse_project_settings({"defaults": defaults}, Source(path, "vars.emarsys"))
    assert problems == []
    return project


def test_defaults_merge_deeply_and_the_sync_wins():
    project = project_defaults({"null_policy": "clear", "key": {"field": "customer_id"},
                                "constants": {"source": "dbt"}, "safety": {"max_removal_share": 0.05}})
    folder = {"timezone": "Europe/Berlin", "constants": {"brand": "shop"}}
    syncs, problems = parse_model_meta(
        MODEL, {"syncs": [{"name": "s", "key": {"column": "email"}, "constants": {"brand": "outlet"},
                           "null_policy": "skip"}]}, defaults=folder, project=project)
    assert problems == []
    spec = syncs[0].spec
    assert spec.key.column == "email" and spec.key.field == "customer_id"   # nested keys merge
    assert spec.constants == {"source": "dbt", "brand": "outlet"}           # model default, then the sync
    assert spec.null_policy == "skip" and spec.timezone == "Europe/Berlin"
    assert spec.safety.max_removal_share == 0.05


def test_lists_in_defaults_are_replaced_not_appended():
    assert deep_merge({"a": [1, 2], "b": {"c": 1}}, {"a": [3], "b": {"d": 2}}) == {"a": [3], "b": {"c": 1, "d": 2}}


def test_a_bad_default_is_reported_once_where_it_is_written():
    source = Source("dbt_project.yml", "vars.emarsys", {"vars.emarsys.defaults.null_policy": 14})
    project, problems = parse_project_settings({"defaults": {"null_policy": "wipe"}}, source)
    assert problems == []
    syncs, problems = collect_declarations(
        [(MODEL, {"syncs": [sync()]}), (OTHER, {"syncs": [sync(name="b")]})], project=project)
    assert syncs == []
    assert [(p.path, p.line, p.key) for p in problems] == [("dbt_project.yml", 14, "vars.emarsys.defaults.null_policy")]
    assert "got 'wipe'; did you mean 'skip'?" in problems[0].message or "got 'wipe'" in problems[0].message


@pytest.mark.parametrize("settings, key, message", [
    ({"default": {}}, "vars.emarsys.default", "unknown key 'default'; did you mean 'defaults'?"),
    ({"defaults": {"nul_policy": "clear"}}, "vars.emarsys.defaults.nul_policy",
     "unknown key 'nul_policy'; did you mean 'null_policy'?"),
    ({"defaults": {"name": "x"}}, "vars.emarsys.defaults.name",
     "a default can't set the sync's name (names are unique)"),
    ({"exposures": {"maturity": "mature"}}, "vars.emarsys.exposures.maturity",
     "expected one of 'low', 'medium', 'high', got 'mature'"),
])
def test_project_settings_are_validated(settings, key, message):
    _, problems = parse_project_settings(settings, Source("dbt_project.yml", "vars.emarsys"))
    assert [(p.key, p.message) for p in problems] == [(key, message)]


def test_a_model_default_with_an_unknown_key_points_at_emarsys_defaults():
    source = Source("dbt_project.yml", "emarsys_defaults", {"emarsys_defaults.time_zone": 22})
    _, problems = parse_model_meta(MODEL, {"syncs": [sync()]}, defaults={"time_zone": "UTC"},
                                   defaults_source=source)
    assert [(p.path, p.line, p.key, p.message) for p in problems] == [
        ("dbt_project.yml", 22, "emarsys_defaults.time_zone", "unknown key 'time_zone'; did you mean 'timezone'?")]


# -- Jinja --------------------------------------------------------------------------------------------


def test_jinja_renders_env_var_var_and_target_with_native_types():
    render = JinjaRenderer({"suffix": "2026", "on": False}, env={"LIST_LABEL": "Gold"},
                           target={"name": "prod"})
    meta = {"syncs": [sync(object="contact_list", behaviour="mirror",
                           list="VIP {{ env_var('LIST_LABEL') }} {{ var('suffix') }} {{ target.name }}",
                           enabled="{{ var('on') }}", constants={"source": "{{ env_var('MISSING', 'dbt') }}"})]}
    syncs, problems = parse_model_meta(MODEL, meta, render=render)
    assert problems == []
    spec = syncs[0].spec
    assert spec.list == "VIP Gold 2026 prod"
    assert spec.enabled is False                      # a boolean, not the string "False"
    assert spec.constants == {"source": "dbt"}


@pytest.mark.parametrize("template, message", [
    ("{{ env_var('NOPE') }}", "Env var required but not provided: 'NOPE'"),
    ("{{ var('nope') }}", "Required var 'nope' not found"),
    ("{{ env_var('DBT_ENV_SECRET_TOKEN') }}", "secret environment variables can't be used"),
    ("{{ env_var('EMARSYS_CLIENT_SECRET') }}", "secret environment variables can't be used"),
    ("{{ undefined_thing }}", "undefined"),
    ("{{ 1 + }}", "could not render"),
])
def test_jinja_problems_are_reported_at_the_key(template, message):
    render = JinjaRenderer({}, env={"EMARSYS_CLIENT_SECRET": "s3cr3t-value", "DBT_ENV_SECRET_TOKEN": "t0k3n"})
    _, problems = parse_model_meta(MODEL, {"syncs": [sync(object="contact_list", behaviour="mirror",
                                                          list=template)]}, render=render)
    assert [p.key for p in problems] == ["emarsys.syncs[0].list"]
    assert message in problems[0].message
    assert "s3cr3t-value" not in problems[0].message and "t0k3n" not in problems[0].message


# -- secrets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("meta, key", [
    ({"syncs": [sync(client_secret="abc123")]}, "emarsys.syncs[0].client_secret"),
    ({"syncs": [sync(password="hunter2")]}, "emarsys.syncs[0].password"),
    ({"syncs": [sync(key={"column": "email", "api_key": "xyz"})]}, "emarsys.syncs[0].key.api_key"),
    ({"syncs": [sync()], "token": "xyz"}, "emarsys.token"),
    ({"syncs": [sync(**{"Client-Secret": "abc123"})]}, "emarsys.syncs[0].Client-Secret"),
    ({"syncs": [sync(credentials={"user": "u", "secret": "abc123"})]}, "emarsys.syncs[0].credentials"),
])
def test_secrets_in_meta_are_refused_without_repeating_them(meta, key):
    syncs, problems = parse_model_meta(MODEL, meta)
    # The sync holding the credential never runs (a model-level one is reported all the same).
    assert not [s for s in syncs if key.startswith(s.key())]
    assert key in [p.key for p in problems]
    problem = next(p for p in problems if p.key == key)
    assert "credentials are never read from dbt config" in problem.message
    assert "EMARSYS_CLIENT_SECRET" in problem.message
    for value in ("abc123", "hunter2", "xyz"):
        assert value not in str(problem)


def test_column_and_field_names_that_look_like_secrets_are_data_not_credentials():
    syncs, problems = parse_model_meta(MODEL, {"syncs": [sync(fields={"password_reset_token": "notes"},
                                                              constants={"token_field": "x"})]})
    assert problems == [] and syncs[0].spec.fields == {"password_reset_token": "notes"}


def test_secrets_in_project_defaults_are_refused():
    _, problems = parse_project_settings({"defaults": {"client_secret": "abc123"}},
                                         Source("dbt_project.yml", "vars.emarsys"))
    assert [p.key for p in problems] == ["vars.emarsys.defaults.client_secret"]
    assert "abc123" not in str(problems[0])


def test_declaration_objects_and_pairs_are_both_accepted():
    decl = Declaration(MODEL, {"syncs": [sync()]}, Source("models/contacts.yml"))
    syncs = parse_declarations([decl, (OTHER, {"syncs": [sync(name="other")]})],
                               project=ProjectDefaults())
    assert [s.name for s in syncs] == ["contacts", "other"]
    assert syncs[0].key("fields.first_name") == "emarsys.syncs[0].fields.first_name"


SECRETS = [("EMARSYS_CLIENT_SECRET", "s3cr3t-value"), ("DBT_ENV_SECRET_GIT", "gitpass99")]


@pytest.mark.parametrize("meta, key", [
    ({"syncs": [sync(object="contact_list", behaviour="mirror", list="s3cr3t-value")]}, "emarsys.syncs[0].list"),
    ({"syncs": [sync(constants={"source": "prefix gitpass99 suffix"})]}, "emarsys.syncs[0].constants.source"),
    ({"syncs": [sync(fields={"s3cr3t-value": "first_name"})]}, "emarsys.syncs[0].fields"),
])
def test_a_declaration_holding_a_secret_variables_value_is_refused(meta, key):
    """dbt renders env_var() in YAML before the manifest: the value is all that is left to recognise."""
    syncs, problems = parse_model_meta(MODEL, meta, secrets=SECRETS)
    assert syncs == []
    assert key in [p.key for p in problems]
    assert "holds the value of the secret environment variable" in str(problems)
    assert "s3cr3t-value" not in str(problems) and "gitpass99" not in str(problems)


def test_secret_variables_are_those_the_renderer_refuses_and_short_values_are_ignored():
    from dbt_emarsys_sync.spec import is_secret_variable, secret_variables

    env = {"EMARSYS_CLIENT_SECRET": "long-enough", "EMARSYS_SECRET": "short", "DBT_CLOUD_API_TOKEN": "tok-123456",
           "DBT_ENV_SECRET_X": "abcdefgh", "EMARSYS_AUTH_URL": "https://auth.example.com/token",
           "EMARSYS_CLIENT_ID": "client-id-1"}
    assert [name for name, _ in secret_variables(env)] == ["DBT_CLOUD_API_TOKEN", "DBT_ENV_SECRET_X",
                                                           "EMARSYS_CLIENT_SECRET"]
    assert is_secret_variable("DBT_CLOUD_WEBHOOK_SECRET") and not is_secret_variable("EMARSYS_CLIENT_ID")


def test_env_var_of_a_secret_in_the_raw_yaml_is_refused_even_when_unset():
    source = Source("models/contacts.yml", "emarsys", {"emarsys.syncs[0].list": 9},
                    env_vars=(("EMARSYS_SECRET", 9), ("LIST_NAME", 10)))
    _, problems = parse_model_meta(MODEL, {"syncs": [sync(object="contact_list", behaviour="mirror",
                                                          list="fallback")]}, source=source, secrets=[])
    assert [(p.key, p.line) for p in problems] == [("emarsys.syncs[0].list", 9)]
    assert "env_var('EMARSYS_SECRET'): secret environment variables can't be used" in problems[0].message


def test_a_broken_sync_is_still_checked_as_far_as_it_parses():
    from dbt_emarsys_sync.spec import collect

    found = collect([(MODEL, {"syncs": [sync(behavior="x", object="contactlist", fields={"countrie": "country"}),
                                        sync(name="ok")], "token": "abc123"}),
                     (OTHER, {"syncs": [sync(null_policy="never"), {"name": "no_key"}]})])
    # A typo in one sync neither drops its siblings nor hides a duplicate name among broken syncs.
    assert [s.name for s in found.syncs] == ["ok"]
    assert [(s.model.name, s.name, s.spec.fields) for s in found.incomplete] == [
        ("contacts", "contacts", {"countrie": "country"}), ("others", "contacts", {"first_name": "first_name"})]
    keys = {(p.model, p.key) for p in found.problems}
    assert {("contacts", "emarsys.token"), ("contacts", "emarsys.syncs[0].behavior"),
            ("contacts", "emarsys.syncs[0].object"), ("others", "emarsys.syncs[0].null_policy"),
            ("others", "emarsys.syncs[0].name"), ("others", "emarsys.syncs[1].key")} <= keys
    assert [(n.key, n.message) for n in found.unchecked] == [
        ("emarsys.syncs[1]", "column and field checks skipped for sync no_key until its declaration is fixed")]
    assert "abc123" not in str(found.problems)
