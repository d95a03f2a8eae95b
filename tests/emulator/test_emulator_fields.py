"""Fields (emarsys-api.md §4): the catalogue, translations, choices, system fields and custom fields."""

from __future__ import annotations

from tests.emulator.conftest import data, reply


def test_field_list_has_the_system_fields_with_types_and_string_ids(api):
    """§4.1 / §4.4: GET /field -> [{id, name, application_type, string_id}], system fields 0-48."""
    fields = {int(f["id"]): f for f in data(api.get("/field"))}
    assert set(range(49)) <= set(fields)
    assert fields[3] == {"id": 3, "name": "E-Mail", "application_type": "longtext", "string_id": "email"}
    assert fields[31]["string_id"] == "optin" and fields[14]["application_type"] == "singlechoice"
    assert fields[4]["application_type"] == "birthdate" and fields[0]["application_type"] == "interests"


def test_default_custom_fields_are_there(api):
    """§4.3 / README: the sandbox's custom fields with their string ids."""
    fields = {f["string_id"]: f for f in data(api.get("/field"))}
    assert {k: fields[k]["application_type"] for k in (
        "lifetime_value", "customer_id", "loyalty_tier", "signup_date", "favourite_categories", "notes")} == {
        "lifetime_value": "numeric", "customer_id": "shorttext", "loyalty_tier": "singlechoice",
        "signup_date": "date", "favourite_categories": "multichoice", "notes": "largetext"}


def test_translate_answers_names_in_a_language_and_1002_for_an_unsupported_one(api):
    """§4.1: /field/translate/{lang}; an unsupported code gives 1002."""
    german = {int(f["id"]): f["name"] for f in data(api.get("/field/translate/de"))}
    assert german[1] == "Vorname" and german[3] == "E-Mail"
    assert {int(f["id"]): f["name"] for f in data(api.get("/field/translate/en"))}[1] == "First Name"
    assert reply(api.get("/field/translate/xx")) == (400, 1002)


def test_choices_answer_id_choice_and_bit_position(api):
    """§4.2: /field/{id}/choice -> [{id (string), choice, bit_position}]; translate too."""
    choices = data(api.get("/field/5/choice"))
    assert choices[0] == {"id": "1", "choice": "Male", "bit_position": 0}
    assert data(api.get("/field/5/choice/translate/de"))[0]["choice"] == "Männlich"
    assert reply(api.get("/field/5/choice/translate/zz")) == (400, 1002)
    assert [c["choice"] for c in data(api.get("/field/5003/choice"))] == ["Bronze", "Silver", "Gold", "Platinum"]
    assert api.get("/field/424242/choice").status_code == 404


def test_choices_of_several_fields(api):
    """§4.2: GET /field/choices?fields=..&language=en -> {field id: [choices]}."""
    body = data(api.get("/field/choices", params={"fields": "5,5003", "language": "en"}))
    assert set(body) == {"5", "5003"} and body["5003"][1]["choice"] == "Silver"


def test_seeded_custom_fields_take_values_by_type(api, control):
    """§4.3 / §4.5: a seeded custom field appears in /field and validates values by its type."""
    control.seed(fields=[{"id": 9001, "name": "Plan", "application_type": "singlechoice", "string_id": "plan",
                          "choices": ["Free", "Pro"]}])
    assert {"id": 9001, "name": "Plan", "application_type": "singlechoice", "string_id": "plan"} in data(api.get("/field"))
    body = data(api.upsert([{"3": "a@x.com", "9001": "2"}, {"3": "b@x.com", "9001": "3"}]))
    assert list(body["errors"]) == ["b@x.com"]
    assert control.get("/contacts")[0]["9001"] == 2
