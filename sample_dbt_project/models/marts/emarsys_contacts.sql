-- Every customer, shaped for Emarsys. Emails are passed through as the shop stores them:
-- the runner trims and lower-cases email keys, and rejects the invalid ones with a reason.
select
    customer_id,
    email,
    first_name,
    last_name,
    date_of_birth as birth_date,
    country,
    marketing_opt_in as optin,
    lifetime_value,
    loyalty_tier,
    signed_up_at
from {{ ref('stg_customers') }}
