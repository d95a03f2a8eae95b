"""The emulator's field catalogue: Emarsys system fields (emarsys-api.md §4.4) plus custom fields.

Field ids are integers here; the wire format carries them as strings (`"3"`), as Emarsys does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Text length limits (emarsys-api.md §4.5): shorttext 60, longtext 255, url 1000; largetext unlimited.
TEXT_LIMITS = {"shorttext": 60, "longtext": 255, "url": 1000, "fax": 60}


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

    def as_api(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "application_type": self.application_type,
            "string_id": self.string_id,
        }


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
    """Build a custom field from a seed dict: id, name, application_type, string_id, indexed, choices."""
    labels = spec.get("choices") or []
    return FieldDef(
        id=int(spec["id"]),
        name=spec["name"],
        application_type=spec["application_type"],
        string_id=spec.get("string_id"),
        indexed=bool(spec.get("indexed", False)),
        choices=_choices(labels, first_id=1) if labels else [],
    )
