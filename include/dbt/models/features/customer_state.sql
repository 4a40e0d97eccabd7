-- Every customer seen up to `ds`, with running totals over the windows ending on `ds`.
--
-- Normally derived from yesterday's published state: today's orders enter every window and the
-- orders of the day that falls out of an N-day window (ds - N) leave it, so a run reads one state
-- partition and five days of silver orders whatever the length of the history. When yesterday's
-- state is missing or stale (`state_from_yesterday`, decided by churnflow.features from the
-- lake) the same totals are computed from all silver orders up to `ds`. Amounts stay decimal, so
-- adding and subtracting day after day is exact.
{%- set windows = var('windows') %}
{%- set day = day_literal() %}
{%- set chained = var('state_from_yesterday') %}
{%- set totals -%}
    min(first_order_ts) as first_order_ts,
    max(last_order_ts) as last_order_ts,
    cast(sum(orders_total) as bigint) as orders_total,
    {%- for n in windows %}
    cast(sum(orders_{{ n }}d) as bigint) as orders_{{ n }}d,
    {%- endfor %}
    {%- for n in windows %}
    cast(sum(amount_{{ n }}d) as decimal(22, 2)) as amount_{{ n }}d,
    {%- endfor %}
    cast(sum(items_90d) as bigint) as items_90d,
    {{ run_stamp() }} as built_at,
    {{ day }} as ds
{%- endset %}

with orders as (
    -- the orders read, one row each (one aggregation, by customer, does the rest): the run's day
    -- and the days leaving a window when chained, every day up to ds otherwise
    select
        customer_id,
        1 as orders,
        amount,
        cast(items as bigint) as items,
        order_ts as first_order_ts,
        order_ts as last_order_ts,
        ds
    from {{ ref('stg_orders') }}
    {%- if chained %}
    where ds in ({{ day }}{% for n in windows %}, date_sub({{ day }}, {{ n }}){% endfor %})
    {%- else %}
    where ds <= {{ day }}
    {%- endif %}
),

{%- if chained %}

changes as (
    -- chained from the published state of the previous day
    select
        customer_id,
        first_order_ts,
        last_order_ts,
        orders_total,
        {%- for n in windows %}
        orders_{{ n }}d,
        {%- endfor %}
        {%- for n in windows %}
        amount_{{ n }}d,
        {%- endfor %}
        items_90d
    from {{ published('customer_state') }}
    where ds = date_sub({{ day }}, 1)

    union all

    select
        customer_id,
        case when ds = {{ day }} then first_order_ts end,
        case when ds = {{ day }} then last_order_ts end,
        case when ds = {{ day }} then orders else 0 end,
        {%- for n in windows %}
        {{ window_sign(n) }} * orders,
        {%- endfor %}
        {%- for n in windows %}
        {{ window_sign(n) }} * amount,
        {%- endfor %}
        {{ window_sign(90) }} * items
    from orders
)

select customer_id, {{ totals }}
from changes
group by customer_id

{%- else %}

changes as (
    select
        customer_id,
        first_order_ts,
        last_order_ts,
        orders as orders_total,
        {%- for n in windows %}
        case when ds > date_sub({{ day }}, {{ n }}) then orders else 0 end as orders_{{ n }}d,
        {%- endfor %}
        {%- for n in windows %}
        case when ds > date_sub({{ day }}, {{ n }}) then amount else 0 end as amount_{{ n }}d,
        {%- endfor %}
        case when ds > date_sub({{ day }}, 90) then items else 0 end as items_90d
    from orders
)

select /*+ REPARTITION(1) */ customer_id, {{ totals }}
from changes
group by customer_id

{%- endif %}
