"""Declarations in config.meta.emarsys -> SyncSpec, and every problem reported with its place."""

from __future__ import annotations

import pytest

from dbt_emarsys_sync.spec import ModelRef, SpecError, parse_declarations, parse_model_meta

MODEL = ModelRef("model.shop.contacts", "contacts", '"db"."main"."contacts"', "models/contacts.yml")
OTHER = ModelRef("model.shop.others", "others", '"db"."main"."others"', "models/others.yml")


def sync(**overrides):
    base = {"name": "contacts", "object": "contact", "behaviour": "update_or_create",
            "key": {"column": "email", "field": "email"}, "fields": {"first_name": "first_name"}}
    base.update(overrides)
    return base


def test_a_valid_declaration_gives_a_spec_with_safe_defaults():
    syncs, problems = parse_model_meta(MODEL, {"syncs": [sync()]})
    assert problems == []
    spec = syncs[0].spec
    assert spec.name == "contacts" and spec.key.column == "email"
    assert spec.null_policy == "skip"          # never wipe Emarsys data by accident
    assert spec.normalize_email is True
    assert spec.safety.max_removal_share == 0.2 and spec.safety.allow_empty is False


@pytest.mark.parametrize("meta, key, fragment", [
    ({"syncs": [sync(behavior="mirror")]}, "emarsys.syncs[0].behavior", "did you mean 'behaviour'"),
    ({"syncs": [sync(behaviour="upsert")]}, "emarsys.syncs[0].behaviour", "got 'upsert'"),
    ({"syncs": [sync(behaviour="mirorr", object="contact_list", list="L")]}, "emarsys.syncs[0].behaviour",
     "did you mean 'mirror'"),
    ({"syncs": [sync(key={"column": "email", "feild": 3})]}, "emarsys.syncs[0].key.feild",
     "did you mean 'field'"),
    ({"syncs": [{k: v for k, v in sync().items() if k != "key"}]}, "emarsys.syncs[0].key",
     "required key is missing"),
    ({"syncs": [sync(object="contact_list", behaviour="mirror")]}, "emarsys.syncs[0]", "needs 'list'"),
    ({"syncs": [sync(key={"column": "contact_id", "field": "id"})]}, "emarsys.syncs[0]", "update_only"),
    ({"syncs": [sync(name="has space")]}, "emarsys.syncs[0].name", "pattern"),
    ({"syncs": []}, "emarsys.syncs", "at least 1"),
    ({"sync": [sync()]}, "emarsys.sync", "did you mean 'syncs'"),
    ({"syncs": [sync(fields=["first_name"])]}, "emarsys.syncs[0].fields", "dictionary"),
])
def test_invalid_declarations_name_the_key_path(meta, key, fragment):
    syncs, problems = parse_model_meta(MODEL, meta)
    assert syncs == []
    assert any(p.key == key and fragment in p.message for p in problems), problems
    assert all(p.path == "models/contacts.yml" and p.model == "contacts" for p in problems)


def test_every_problem_of_every_model_is_reported_at_once():
    with pytest.raises(SpecError) as info:
        parse_declarations([(MODEL, {"syncs": [sync(behavior="x")]}),
                            (OTHER, {"syncs": [sync(name="ok", key={})]})])
    text = str(info.value)
    assert "models/contacts.yml: model contacts: emarsys.syncs[0].behavior" in text
    assert "models/others.yml: model others: emarsys.syncs[0].key.column" in text


def test_two_syncs_with_one_name_are_refused():
    with pytest.raises(SpecError, match="sync name 'contacts' is also used by model contacts"):
        parse_declarations([(MODEL, {"syncs": [sync()]}), (OTHER, {"syncs": [sync()]})])


def test_update_only_may_key_on_the_emarsys_contact_id():
    syncs, problems = parse_model_meta(
        MODEL, {"syncs": [sync(behaviour="update_only", key={"column": "contact_id", "field": "id"})]})
    assert problems == [] and syncs[0].spec.key.field == "id"
