-- The VIP audience: customers with a high lifetime value who agreed to marketing.
select
    email,
    first_name,
    lifetime_value
from {{ ref('stg_customers') }}
where lifetime_value >= 20000
  and marketing_opt_in
