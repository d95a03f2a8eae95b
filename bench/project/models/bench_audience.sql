-- An audience of about audience_rows members. churn_seed picks which hundredth of the customers is
-- left out, so moving it from 0 to 1 makes 1% of the members leave and another 1% enter.
select
    'customer.' || i || '@bench.example.com' as email
from range(1, {{ var('audience_rows') }} + {{ var('audience_rows') }} // 99 + 1) as t(i)
where i % 100 <> {{ var('churn_seed') }}
