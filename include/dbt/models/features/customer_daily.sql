-- One row per customer and day with orders: what that day adds to every window.
-- A run aggregates only the days churnflow.features lists (`aggregate_days`): the run's day, plus
-- any earlier silver day never aggregated (a first run, a late day) or republished since (a rerun
-- of ingest), so its cost grows with the day's volume, not with the history.
{%- set days = var('aggregate_days') %}

select /*+ REPARTITION(ds) */
    customer_id,
    count(*) as orders,
    cast(sum(amount) as decimal(22, 2)) as amount,
    cast(sum(items) as bigint) as items,
    min(order_ts) as first_order_ts,
    max(order_ts) as last_order_ts,
    {{ run_stamp() }} as built_at,
    ds
from {{ ref('stg_orders') }}
where ds in ({% for day in days %}{{ day_literal(day) }}{{ ', ' if not loop.last }}{% endfor %})
group by customer_id, ds
