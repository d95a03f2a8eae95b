"""The emulator's field catalogue: Emarsys system fields (emarsys-api.md §4.4) plus custom fields, and
how a value sent for each field type is checked and stored (§4.5, reply code 2007 on a bad value).

Field ids are integers here; the wire format carries them as strings (`"3"`), as Emarsys does. Each
field carries a `coerce(value, truncate)` function built once for its type, so a contact batch pays
one call per value and no type dispatch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

# Text length limits (emarsys-api.md §4.5): shorttext 60, longtext 255, url 1000; largetext unlimited.
TEXT_LIMITS = {"shorttext": 60, "longtext": 255, "url": 1000, "fax": 60}
TEXT_TYPES = frozenset({"shorttext", "longtext", "largetext", "url", "fax"})
DATE_TYPES = frozenset({"date", "birthdate"})
# Types a custom field may have (seeded or configured).
CUSTOM_TYPES = frozenset({"shorttext", "longtext", "largetext", "url", "date", "birthdate", "numeric",
                          "singlechoice", "multichoice"})
OPTIN_FIELD = 31

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMERIC_RE = re.compile(r"^-?\d{1,24}(\.\d+)?$")


class BadValue(Exception):
    """A value a field can't take: the replyCode and message Emarsys reports for that contact."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Choice:
    id: int
    label: str
    bit_position: int


@dataclass
class FieldDef:
    id: int
    name: str
    application_type: str
    string_id: str | None
    read_only: bool = False
    indexed: bool = False
    choices: list[Choice] = field(default_factory=list)
    # coerce(value, truncate) -> the value to store; raises BadValue. Built from the type.
    coerce: Callable[[Any, bool], Any] = field(init=False, repr=False, compare=False)
    # coerce_column(values) -> the values to store, or None when any value needs the per-value path
    # (an error, null, "", truncation, an unusual type). Loops in C where it can: the batch fast path.
    coerce_column: Callable[[tuple], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.coerce = _coercer(self)
        self.coerce_column = _column_coercer(self)

    def as_api(self, lang: str = "en") -> dict:
        return {
            "id": self.id,
            "name": translate_field_name(self, lang),
            "application_type": self.application_type,
            "string_id": self.string_id,
        }

    def choices_as_api(self, lang: str = "en") -> list[dict]:
        return [{"id": str(c.id), "choice": translate_choice(self, c, lang), "bit_position": c.bit_position}
                for c in self.choices]

    def render(self, stored: Any) -> Any:
        """A stored value as getdata/query return it: strings (lists of strings for multichoice)."""
        if stored is None:
            return None
        if isinstance(stored, list):
            return [str(v) for v in stored]
        return str(stored)


# -- coercion -----------------------------------------------------------------------------------


def _coercer(f: FieldDef) -> Callable[[Any, bool], Any]:
    fid, kind = f.id, f.application_type

    if f.read_only:
        def read_only(value: Any, truncate: bool) -> Any:
            raise BadValue(2007, f"Field id {fid} is read-only and cannot be changed")
        return read_only

    if fid == OPTIN_FIELD:
        def optin(value: Any, truncate: bool) -> Any:
            # JSON true is Python True == 1: refuse booleans explicitly (emarsys-api.md §3.3).
            if value.__class__ is int and value in (1, 2):
                return value
            if value in ("1", "2"):
                return int(value)
            raise BadValue(2007, f"Invalid value for field id {fid}: opt-in accepts 1, 2 or null")
        return optin

    if kind in TEXT_TYPES:
        limit = TEXT_LIMITS.get(kind)

        def text(value: Any, truncate: bool) -> Any:
            if value.__class__ is not str:
                if value.__class__ in (int, float):
                    value = str(value)
                else:
                    raise BadValue(2007, f"Invalid data format for field id {fid}: Scalar expected")
            if limit is not None and len(value) > limit:
                if truncate:
                    return value[:limit]
                raise BadValue(2007, f"Invalid value for field id {fid}: longer than {limit} characters")
            return value
        return text

    if kind in DATE_TYPES:
        def date_value(value: Any, truncate: bool) -> Any:
            if value.__class__ is str and _DATE_RE.match(value):
                try:
                    date.fromisoformat(value)
                    return value
                except ValueError:
                    pass
            raise BadValue(2007, f"Invalid date format for field id {fid} (valid: YYYY-MM-DD)")
        return date_value

    if kind == "numeric":
        def numeric(value: Any, truncate: bool) -> Any:
            if value.__class__ in (int, float, str):
                text = value if value.__class__ is str else repr(value)
                if _NUMERIC_RE.match(text):
                    return text
            raise BadValue(2007, f"Invalid value for field id {fid}: numeric expected")
        return numeric

    if kind == "singlechoice":
        valid = {str(c.id): c.id for c in f.choices}

        def single(value: Any, truncate: bool) -> Any:
            if value.__class__ in (list, dict):
                raise BadValue(2007, f"Invalid data format for field id {fid}: Scalar expected")
            choice = valid.get(value if value.__class__ is str else str(value))
            if choice is None or value.__class__ is bool:
                raise BadValue(2007, f"Invalid choice id for field id {fid}: {value}")
            return choice
        return single

    if kind == "multichoice":
        valid = {str(c.id): c.id for c in f.choices}

        def multi(value: Any, truncate: bool) -> Any:
            if value.__class__ is not list:
                raise BadValue(2007, f"Invalid data format for field id {fid}: Array expected")
            if not value:
                raise BadValue(2007, f"No choice provided for field id {fid}")
            out = []
            for v in value:
                choice = None if v.__class__ in (bool, list, dict) else valid.get(str(v))
                if choice is None:
                    raise BadValue(2007, f"Invalid choice id for field id {fid}: {v}")
                out.append(choice)
            return out
        return multi

    def not_settable(value: Any, truncate: bool) -> Any:
        raise BadValue(2007, f"Field id {fid} cannot be set through the API")
    return not_settable


COUNTRIES = [
    "Austria", "Belgium", "Czech Republic", "Denmark", "Finland", "France", "Germany", "Hungary",
    "Ireland", "Italy", "Japan", "Netherlands", "Norway", "Poland", "Portugal", "Spain", "Sweden",
    "Switzerland", "Turkey", "United Kingdom", "United States",
]


def _choices(labels: list[str], first_id: int = 1) -> list[Choice]:
    return [Choice(id=first_id + i, label=label, bit_position=i) for i, label in enumerate(labels)]


# (id, name, application_type, string_id, read_only)
_SYSTEM = [
    (0, "Interests", "interests", "interests", True),
    (1, "First Name", "shorttext", "first_name", False),
    (2, "Last Name", "shorttext", "last_name", False),
    (3, "E-Mail", "longtext", "email", False),
    (4, "Date of Birth", "birthdate", "birth_date", False),
    (5, "Gender", "singlechoice", "gender", False),
    (6, "Marital Status", "singlechoice", "marital_status", False),
    (7, "Children", "singlechoice", "children", False),
    (8, "Education", "singlechoice", "education", False),
    (9, "Title", "singlechoice", "title", False),
    (10, "Address", "longtext", "address", False),
    (11, "City", "shorttext", "city", False),
    (12, "State", "shorttext", "state", False),
    (13, "ZIP Code", "shorttext", "zip_code", False),
    (14, "Country", "singlechoice", "country", False),
    (15, "Phone", "shorttext", "phone", False),
    (16, "Fax", "fax", "fax", False),
    (17, "Job Position", "singlechoice", "company_position", False),
    (18, "Company", "longtext", "company_name", False),
    (19, "Department", "singlechoice", "company_department", False),
    (20, "Industry", "singlechoice", "company_industry", False),
    (21, "Phone (office)", "shorttext", "company_phone", False),
    (22, "Fax (office)", "fax", "company_fax", False),
    (23, "Number of Employees", "singlechoice", "company_employees", False),
    (24, "Annual Revenue (in 000 EUR)", "singlechoice", "company_annual_revenue", False),
    (25, "URL", "url", "url", False),
    (26, "Preferred e-mail format", "singlechoice", "preferred_email_format", False),
    (27, "Avg. length of visit", "special", "average_visit_duration", True),
    (28, "Page views per day", "special", "pageviews_per_day", True),
    (29, "Days since last e-mail sent", "special", "days_since_last_email_sent", True),
    (30, "Response rate", "special", None, True),
    (31, "Opt-In", "special", "optin", False),
    (32, "User status", "special", "status", True),
    (33, "Contact source", "special", "source", True),
    (34, "Contact form", "special", "form", True),
    (35, "Registration Language", "singlechoice", "registration_language", False),
    (36, "Newsletter", "special", "newsletter", True),
    (37, "Mobile", "shorttext", "mobile", False),
    (38, "First Name of Partner", "shorttext", "partner_first_name", False),
    (39, "Birthdate of Partner", "birthdate", "partner_birth_date", False),
    (40, "Anniversary", "date", "anniversary", False),
    (41, "Company Address", "longtext", "company_address", False),
    (42, "Zip Code (office)", "shorttext", "company_zip_code", False),
    (43, "City (office)", "shorttext", "company_city", False),
    (44, "State (office)", "shorttext", "company_state", False),
    (45, "Country (office)", "singlechoice", "company_country", False),
    (46, "Salutation", "singlechoice", "salutation", False),
    (47, "E-Mail valid", "special", "email_valid", True),
    (48, "Date of first registration", "special", "registration_date", True),
]

_SYSTEM_CHOICES = {
    5: ["Male", "Female", "Diverse"],
    6: ["Single", "Married", "Divorced", "Widowed"],
    7: ["No", "Yes"],
    8: ["Primary", "Secondary", "Bachelor", "Master", "Doctorate"],
    9: ["Dr.", "Prof.", "Prof. Dr."],
    14: COUNTRIES,
    26: ["HTML", "Text"],
    35: ["English", "German", "French", "Spanish", "Italian"],
    45: COUNTRIES,
    46: ["Mr.", "Ms.", "Mx."],
}

# Custom fields every fresh emulator has, so the sample project maps onto something realistic.
# Ids start high, as account-specific fields do in Emarsys.
DEFAULT_CUSTOM_FIELDS = [
    {"id": 5001, "name": "Lifetime Value", "application_type": "numeric", "string_id": "lifetime_value"},
    {"id": 5002, "name": "Customer ID", "application_type": "shorttext", "string_id": "customer_id",
     "indexed": True},
    {"id": 5003, "name": "Loyalty Tier", "application_type": "singlechoice", "string_id": "loyalty_tier",
     "choices": ["Bronze", "Silver", "Gold", "Platinum"]},
    {"id": 5004, "name": "Signup Date", "application_type": "date", "string_id": "signup_date"},
    {"id": 5005, "name": "Favourite Categories", "application_type": "multichoice",
     "string_id": "favourite_categories", "choices": ["Shoes", "Bags", "Outdoor", "Kids", "Home"]},
    {"id": 5006, "name": "Notes", "application_type": "largetext", "string_id": "notes"},
]


def _column_coercer(f: FieldDef) -> Callable[[tuple], Any]:
    """The fast, all-or-nothing version of `_coercer` for one column of a batch: it accepts only
    columns in which every value is plainly valid, and returns None otherwise."""
    kind = f.application_type

    def none(values: tuple) -> Any:
        return None

    if f.read_only:
        return none
    if f.id == OPTIN_FIELD:
        allowed = {1, 2, "1", "2"}

        def optin(values: tuple) -> Any:
            if set(map(type, values)) <= {int, str} and set(values) <= allowed:
                return list(map(int, values))
            return None
        return optin
    if kind in TEXT_TYPES:
        limit = TEXT_LIMITS.get(kind)

        def text(values: tuple) -> Any:
            if set(map(type, values)) != {str} or "" in values:
                return None
            if limit is not None and max(map(len, values)) > limit:
                return None
            return values
        return text
    if kind in DATE_TYPES:
        def dates(values: tuple) -> Any:
            if set(map(type, values)) != {str} or not all(map(_DATE_RE.match, values)):
                return None
            try:
                for _ in map(date.fromisoformat, values):
                    pass
            except ValueError:
                return None
            return values
        return dates
    if kind == "numeric":
        def numeric(values: tuple) -> Any:
            if set(map(type, values)) != {str} or not all(map(_NUMERIC_RE.match, values)):
                return None
            return values
        return numeric
    if kind == "singlechoice":
        by_text = {str(c.id): c.id for c in f.choices}
        ids = set(by_text.values())

        def single(values: tuple) -> Any:
            types = set(map(type, values))
            if types == {str} and by_text.keys() >= set(values):
                return list(map(by_text.__getitem__, values))
            if types == {int} and ids >= set(values):
                return values
            return None
        return single
    return none


# -- languages ----------------------------------------------------------------------------------

# Languages `/field/translate/{lang}` accepts; others answer 400 replyCode 1002. German names are
# provided for the system fields; the other languages keep the English names (a sandbox needs the
# shape and the error, not a full translation).
SUPPORTED_LANGUAGES = frozenset({"en", "de", "fr", "es", "it", "nl", "pl", "pt", "cs", "hu", "ru", "tr",
                                 "sv", "da", "fi", "no", "ja", "zh"})

_FIELD_NAMES_DE = {
    0: "Interessen", 1: "Vorname", 2: "Nachname", 3: "E-Mail", 4: "Geburtsdatum", 5: "Geschlecht",
    6: "Familienstand", 7: "Kinder", 8: "Ausbildung", 9: "Titel", 10: "Adresse", 11: "Ort",
    12: "Bundesland", 13: "PLZ", 14: "Land", 15: "Telefon", 16: "Fax", 17: "Position", 18: "Firma",
    19: "Abteilung", 20: "Branche", 21: "Telefon (Büro)", 22: "Fax (Büro)", 23: "Anzahl Mitarbeiter",
    24: "Jahresumsatz (in 1000 EUR)", 25: "URL", 26: "Bevorzugtes E-Mail-Format",
    27: "Durchschn. Besuchsdauer", 28: "Seitenaufrufe pro Tag", 29: "Tage seit letzter E-Mail",
    30: "Antwortrate", 31: "Opt-In", 32: "Benutzerstatus", 33: "Kontaktquelle", 34: "Kontaktformular",
    35: "Registrierungssprache", 36: "Newsletter", 37: "Mobil", 38: "Vorname des Partners",
    39: "Geburtsdatum des Partners", 40: "Jahrestag", 41: "Firmenadresse", 42: "PLZ (Büro)",
    43: "Ort (Büro)", 44: "Bundesland (Büro)", 45: "Land (Büro)", 46: "Anrede", 47: "E-Mail gültig",
    48: "Datum der Erstregistrierung",
}
_CHOICES_DE = {
    5: ["Männlich", "Weiblich", "Divers"],
    7: ["Nein", "Ja"],
    46: ["Herr", "Frau", "Divers"],
}


def translate_field_name(f: FieldDef, lang: str) -> str:
    if lang == "de":
        return _FIELD_NAMES_DE.get(f.id, f.name)
    return f.name


def translate_choice(f: FieldDef, choice: Choice, lang: str) -> str:
    if lang == "de" and f.id in _CHOICES_DE:
        labels = _CHOICES_DE[f.id]
        if 0 <= choice.bit_position < len(labels):
            return labels[choice.bit_position]
    return choice.label


def system_fields() -> list[FieldDef]:
    fields = []
    for fid, name, app_type, string_id, read_only in _SYSTEM:
        fields.append(FieldDef(
            id=fid, name=name, application_type=app_type, string_id=string_id, read_only=read_only,
            indexed=fid == 3,
            choices=_choices(_SYSTEM_CHOICES[fid]) if fid in _SYSTEM_CHOICES else [],
        ))
    return fields


def custom_field(spec: dict) -> FieldDef:
    """Build a custom field from a seed dict: id, name, application_type, string_id, indexed, choices.

    Raises ValueError naming the offending key, so a bad seed or config file says what to fix."""
    if not isinstance(spec, dict):
        raise ValueError(f"a custom field is an object with id, name and application_type, not {spec!r}")
    unknown = set(spec) - {"id", "name", "application_type", "string_id", "indexed", "choices"}
    if unknown:
        raise ValueError(f"custom field {spec.get('id')!r}: unknown key(s) {', '.join(sorted(unknown))}")
    fid = spec.get("id")
    if isinstance(fid, bool) or not isinstance(fid, int) or fid <= 48:
        raise ValueError(f"custom field {fid!r}: 'id' must be an integer above 48 (0-48 are system fields)")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValueError(f"custom field {fid}: 'name' must be a non-empty string of at most 200 characters")
    app_type = spec.get("application_type")
    if app_type not in CUSTOM_TYPES:
        raise ValueError(f"custom field {fid}: 'application_type' must be one of "
                         f"{', '.join(sorted(CUSTOM_TYPES))}, not {app_type!r}")
    string_id = spec.get("string_id")
    if string_id is not None and (not isinstance(string_id, str) or not string_id or string_id.isdigit()):
        raise ValueError(f"custom field {fid}: 'string_id' must be a non-numeric string")
    labels = spec.get("choices") or []
    if labels and app_type not in ("singlechoice", "multichoice"):
        raise ValueError(f"custom field {fid}: only singlechoice and multichoice fields have 'choices'")
    if app_type in ("singlechoice", "multichoice") and not labels:
        raise ValueError(f"custom field {fid}: a {app_type} field needs 'choices' (a list of labels)")
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"custom field {fid}: 'choices' must be a list of labels (strings)")
    return FieldDef(
        id=fid,
        name=name,
        application_type=app_type,
        string_id=string_id,
        indexed=bool(spec.get("indexed", False)),
        choices=_choices(labels, first_id=1) if labels else [],
    )


def field_spec(f: FieldDef) -> dict:
    """The seed dict `custom_field` builds `f` from (to persist seeded fields)."""
    spec = {"id": f.id, "name": f.name, "application_type": f.application_type, "string_id": f.string_id,
            "indexed": f.indexed}
    if f.choices:
        spec["choices"] = [c.label for c in f.choices]
    return spec
