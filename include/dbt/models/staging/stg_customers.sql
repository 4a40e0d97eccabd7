-- Customer attributes as landed, typed; one row per customer and landing day.
select
    trim(customer_id) as customer_id,
    cast(signup_date as date) as signup_date,
    nullif(trim(country), '') as country,
    nullif(trim(channel), '') as channel,
    ds
from {{ source('lake', 'raw_customers') }}
