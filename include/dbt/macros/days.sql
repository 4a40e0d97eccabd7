{#- Helpers that decide, at run time, which days a model reads. -#}

{#- `date'YYYY-MM-DD'` for the run's day (or another day). -#}
{% macro day_literal(day=none) %}
    {{- "date'" ~ (day or var('ds')) ~ "'" -}}
{% endmacro %}


{#- A published table of the lake (`features.<name>`): what earlier runs published, as opposed to
    `ref(name)`, which is this run's staged output. -#}
{% macro published(name) %}
    {{- return(api.Relation.create(schema=var('published_schema'), identifier=name, type='table')) -}}
{% endmacro %}


{#- customer_daily as customer_state sees it: this run's staged days, and every other day from the
    published table. -#}
{% macro daily_history() %}
    {%- set columns = 'customer_id, orders, amount, items, first_order_ts, last_order_ts, built_at, ds' -%}
    {%- set staged_days = [] -%}
    {%- for day in var('aggregate_days') -%}
        {%- do staged_days.append(day_literal(day)) -%}
    {%- endfor -%}
    {{- return('(select ' ~ columns ~ ' from ' ~ ref('customer_daily') ~ ' union all select '
        ~ columns ~ ' from ' ~ published('customer_daily') ~ ' where ds not in ('
        ~ staged_days | join(', ') ~ '))') -}}
{% endmacro %}


{#- The time this dbt invocation started, as a Spark timestamp literal (UTC). -#}
{% macro run_stamp() %}
    {{- "timestamp'" ~ run_started_at.strftime('%Y-%m-%d %H:%M:%S.%f') ~ "'" -}}
{% endmacro %}


{#- +1 for the run's day (entering every window), -1 for the day leaving the n-day window. -#}
{% macro window_sign(n) %}
    {{- 'case when ds = ' ~ day_literal() ~ ' then 1 when ds = date_sub(' ~ day_literal() ~ ', '
        ~ n ~ ') then -1 else 0 end' -}}
{% endmacro %}
