"""The field catalogue: resolving mapping targets by id, string id or name, and choices fetched once."""

from __future__ import annotations

import pytest

from dbt_emarsys_sync.emarsys import FieldCatalog
from dbt_emarsys_sync.emarsys.fields import FieldResolutionError


@pytest.fixture
def catalog(emu):
    client = emu.client("oauth")
    calls: list[int] = []

    def load(field_id: int) -> list[dict]:
        calls.append(field_id)
        return client.get_choices(field_id)

    catalog = FieldCatalog.from_api(client.get_fields(), choice_loader=load)
    catalog.choice_calls = calls
    yield catalog
    client.close()


@pytest.mark.parametrize("ref", [3, "3", " 3 ", "email", "E-Mail", "e-mail", "EMAIL"])
def test_a_field_is_found_by_id_string_id_or_name(catalog, ref):
    assert catalog.resolve(ref).id == 3


def test_custom_fields_resolve_by_name_case_insensitively(catalog):
    assert catalog.resolve("loyalty tier").id == 5003
    assert catalog.resolve("Loyalty_Tier").id == 5003
    assert catalog.resolve("Lifetime Value").application_type == "numeric"


def test_an_ambiguous_name_lists_the_candidates():
    catalog = FieldCatalog.from_api([
        {"id": 1, "name": "Region", "application_type": "shorttext", "string_id": "region_text"},
        {"id": 2, "name": "region", "application_type": "singlechoice", "string_id": "region"},
        {"id": 3, "name": "Area", "application_type": "shorttext", "string_id": "REGION"},
    ])
    assert catalog.resolve("region").id == 2           # an exact string id wins
    with pytest.raises(FieldResolutionError) as err:
        catalog.resolve("Region")
    text = str(err.value)
    assert "ambiguous" in text and "(id 1" in text and "(id 2" in text and "(id 3" in text
    assert "use the field id" in text


def test_unknown_fields_say_so_with_a_suggestion(catalog):
    with pytest.raises(FieldResolutionError, match="no Emarsys field with id 999999"):
        catalog.resolve(999999)
    with pytest.raises(FieldResolutionError, match="did you mean 'loyalty_tier'"):
        catalog.resolve("loyalty_teir")
    with pytest.raises(FieldResolutionError):
        catalog.resolve(True)


def test_choices_are_fetched_once_per_field_per_run(catalog):
    tier, country, name = catalog.resolve("loyalty_tier"), catalog.resolve("country"), catalog.resolve(1)
    catalog.ensure_choices([tier, country, name])
    catalog.ensure_choices([tier, country])
    catalog.ensure_choices([catalog.resolve("Loyalty Tier")])
    assert sorted(catalog.choice_calls) == [14, 5003]
    assert tier.choices["Gold"] == 3 and "Germany" in country.choices
