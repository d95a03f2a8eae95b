select
    customer_id,
    first_name,
    last_name,
    email,
    country,
    date_of_birth,
    marketing_opt_in,
    lifetime_value,
    loyalty_tier,
    signed_up_at
from {{ ref('raw_customers') }}
