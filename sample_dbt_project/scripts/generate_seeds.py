"""Generate the sample project's seed data, deterministically.

Run from the repository root: python sample_dbt_project/scripts/generate_seeds.py
The output (seeds/raw_customers.csv) is committed; rerunning gives the same bytes.
"""

from __future__ import annotations

import csv
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

SEED = 20261203
CUSTOMERS = 2_500

FIRST_NAMES = [
    "Anna", "Ben", "Chloé", "David", "Elif", "François", "Greta", "Hiroshi", "Inés", "Jürgen",
    "Katarzyna", "Lars", "María", "Nikolai", "Oğuz", "Paulína", "Quentin", "Renée", "Søren", "Tomás",
    "Ugo", "Václav", "Wiebke", "Xiaoming", "Yusuf", "Zoë", "Łukasz", "Ævar", "Björn", "Dörte",
    "Emma", "Liam", "Olivia", "Noah", "Sofia", "Mateo", "Leonie", "Ahmet", "Priya", "Kenji",
]
LAST_NAMES = [
    "Müller", "Schmidt", "García", "Nowak", "Dubois", "Rossi", "Johansson", "Kowalski", "Yılmaz",
    "O'Brien", "Smith", "van der Berg", "Novák", "Horváth", "Papadopoulos", "Jensen", "Fernández",
    "Silva", "Tanaka", "Kim", "Ivanova", "Łęcka", "Björk", "Østergaard", "Šimůnek", "Brown",
    "Wilson", "Moreau", "Costa", "Fischer",
]
COUNTRIES = [
    "Germany", "Austria", "Switzerland", "France", "Spain", "Italy", "Poland", "Sweden",
    "Denmark", "Netherlands", "United Kingdom", "Ireland", "Czech Republic", "Hungary", "Turkey",
    "United States", "Japan",
]
TIERS = ["Bronze", "Silver", "Gold", "Platinum"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.de", "shop.example.fr"]


def ascii_local_part(name: str) -> str:
    table = str.maketrans(
        {"é": "e", "ç": "c", "ü": "ue", "ö": "oe", "ä": "ae", "ğ": "g", "í": "i", "ı": "i",
         "ł": "l", "Ł": "L", "ę": "e", "ø": "o", "Ø": "O", "å": "a", "Æ": "Ae", "æ": "ae",
         "š": "s", "Š": "S", "ů": "u", "á": "a", "ñ": "n", "Ç": "C", "Ö": "Oe", "Ü": "Ue",
         "Ò": "O", "ë": "e", "'": "", " ": "", "Ş": "S", "ş": "s", "ň": "n", "č": "c"}
    )
    return name.translate(table).lower()


def build_rows() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    rows = []
    start = datetime(2019, 1, 1, tzinfo=timezone.utc)
    for customer_id in range(1, CUSTOMERS + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{ascii_local_part(first)}.{ascii_local_part(last)}.{customer_id}@{rng.choice(DOMAINS)}"
        roll = rng.random()
        if roll < 0.04:
            email = email.upper() if rng.random() < 0.5 else email.capitalize()  # mixed case
        elif roll < 0.07:
            email = f"  {email} "  # surrounding spaces
        elif roll < 0.08:
            email = rng.choice(["not-an-email", f"{first.lower()}@", "@example.com", "a b@example.com"])
        birth = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
        # Offsets other than UTC, so timestamp -> date conversion is exercised.
        offset = timezone(timedelta(hours=rng.choice([-5, 0, 1, 2, 9])))
        signed_up = (start + timedelta(seconds=rng.randrange(0, 60 * 60 * 24 * 365 * 7))).astimezone(offset)
        ltv = Decimal(rng.randrange(0, 2_500_000)) / Decimal(100)
        rows.append({
            "customer_id": str(customer_id),
            "first_name": first,
            "last_name": last,
            "email": email,
            "country": rng.choice(COUNTRIES),
            "date_of_birth": birth.isoformat() if rng.random() > 0.05 else "",
            "marketing_opt_in": "true" if rng.random() < 0.62 else "false",
            "lifetime_value": f"{ltv:.2f}",
            "loyalty_tier": rng.choice(TIERS),
            "signed_up_at": signed_up.isoformat(),
        })
    return rows


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "seeds" / "raw_customers.csv"
    rows = build_rows()
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} customers to {out}")


if __name__ == "__main__":
    main()
