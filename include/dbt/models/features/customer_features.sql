-- Features of every customer active on `ds` (an order in the 90 days up to and including `ds`),
-- from the running state of `ds` and the customer attributes known by then.
{%- set day = day_literal() %}

with state as (
    select *
    from {{ ref('customer_state') }}
    where ds = {{ day }} and orders_90d > 0
),

attributes as (
    -- the latest row per customer among the partitions landed up to ds
    select customer_id, signup_date, country, channel
    from (
        select
            *,
            row_number() over (partition by customer_id order by ds desc) as recency
        from {{ ref('stg_customers') }}
        where ds <= {{ day }}
    )
    where recency = 1
)

select /*+ REPARTITION(1) */
    state.customer_id,
    datediff({{ day }}, least(to_date(state.first_order_ts), attributes.signup_date)) as tenure_days,
    datediff({{ day }}, to_date(state.last_order_ts)) as days_since_last_order,
    state.orders_7d,
    state.orders_30d,
    state.orders_90d,
    state.orders_365d,
    cast(state.amount_7d as double) as amount_7d,
    cast(state.amount_30d as double) as amount_30d,
    cast(state.amount_90d as double) as amount_90d,
    cast(state.amount_365d as double) as amount_365d,
    state.items_90d,
    cast(state.amount_90d as double) / state.orders_90d as avg_order_value_90d,
    case
        when state.orders_365d >= 2
            then (unix_micros(state.last_order_ts) - unix_micros(state.first_order_ts))
                / 86400e6 / (state.orders_total - 1)
    end as mean_gap_days,
    case
        when state.orders_90d > 0
            then cast(state.orders_30d as double) / (state.orders_90d / 3.0d)
    end as trend_orders_30_90,
    case
        when state.amount_90d > 0
            then cast(state.amount_30d as double) / (cast(state.amount_90d as double) / 3.0d)
    end as trend_amount_30_90,
    attributes.country,
    attributes.channel,
    attributes.signup_date,
    state.ds
from state
left join attributes on attributes.customer_id = state.customer_id
