-- Silver orders as the feature models read them: contract columns with their types.
select
    order_id,
    customer_id,
    cast(order_ts as timestamp) as order_ts,
    cast(amount as decimal(12, 2)) as amount,
    cast(items as int) as items,
    ds
from {{ source('lake', 'silver_orders') }}
