{#- Helpers that decide, at run time, which days a model reads. -#}

{#- `date'YYYY-MM-DD'` for the run's day (or another day). -#}
{% macro day_literal(day=none) %}
    {{- "date'" ~ (day or var('ds')) ~ "'" -}}
{% endmacro %}


{#- The days a relation has partitions for, as YYYY-MM-DD strings (metastore only, no data read). -#}
{% macro partition_days(relation) %}
    {%- set rows = run_query('show partitions ' ~ relation) -%}
    {{ return(rows.columns[0].values() | map('replace', 'ds=', '') | list) }}
{% endmacro %}


{#- customer_daily aggregates the run's day, plus every earlier silver day it has no partition for
    (the first run over existing history, a day that landed late). Fails when silver lacks the
    run's day: features are never built from a partial picture. -#}
{% macro days_to_aggregate(silver, built) %}
    {%- set ds = var('ds') -%}
    {%- if not execute -%}
        {{ return([ds]) }}
    {%- endif -%}
    {%- set silver_days = partition_days(silver) -%}
    {%- if ds not in silver_days -%}
        {{ exceptions.raise_compiler_error(
            'silver orders have no partition ds=' ~ ds ~ ' under ' ~ var('lake')
            ~ '/silver/orders: run `churnflow ingest --ds ' ~ ds ~ '` first') }}
    {%- endif -%}
    {%- set built_days = partition_days(built) -%}
    {%- set days = [] -%}
    {%- for day in silver_days | sort if day == ds or (day < ds and day not in built_days) -%}
        {%- do days.append(day) -%}
    {%- endfor -%}
    {{ return(days) }}
{% endmacro %}


{#- The running state of `ds` can be derived from yesterday's state (a few small partitions read)
    only when yesterday's state exists and no daily partition up to yesterday was (re)built after
    it: a rerun or backfill of an earlier day, or a late day, makes it stale, and the state is then
    rebuilt from all of customer_daily once. Every row of a run carries the run's start time. -#}
{% macro state_follows_yesterday(daily) %}
    {%- if not execute or not is_incremental() -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set check -%}
        select
            (select max(built_at) from {{ this }} where ds = date_sub({{ day_literal() }}, 1))
            >= (select max(built_at) from {{ daily }} where ds < {{ day_literal() }})
    {%- endset -%}
    {{ return(run_query(check).columns[0].values()[0] == true) }}
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
