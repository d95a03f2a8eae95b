-- N synthetic customers with realistic column types: an email key, names, a date, a decimal,
-- a boolean opt-in, a choice label and a timestamp with time zone.
select
    i as customer_id,
    'customer.' || i || '@bench.example.com' as email,
    (['Anna', 'Ben', 'Chloé', 'Dörte', 'Elif', 'François', 'Greta', 'Hiroshi'])[1 + i % 8] as first_name,
    (['Müller', 'García', 'Nowak', 'Dubois', 'Rossi', 'Yılmaz', 'Smith'])[1 + i % 7] as last_name,
    date '1950-01-01' + cast(i % 20000 as integer) as birth_date,
    cast(((i * 7919) % 2500000) / 100 as decimal(12, 2)) as lifetime_value,
    i % 3 <> 0 as optin,
    (['Bronze', 'Silver', 'Gold', 'Platinum'])[1 + i % 4] as loyalty_tier,
    timestamptz '2020-01-01 00:00:00+00' + to_seconds(i * 37) as signed_up_at
from range(1, {{ var('rows') }} + 1) as t(i)
