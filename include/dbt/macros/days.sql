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


{#- The time this dbt invocation started, as a Spark timestamp literal (UTC). -#}
{% macro run_stamp() %}
    {{- "timestamp'" ~ run_started_at.strftime('%Y-%m-%d %H:%M:%S.%f') ~ "'" -}}
{% endmacro %}


{#- +1 for the run's day (entering every window), -1 for the day leaving the n-day window. -#}
{% macro window_sign(n) %}
    {{- 'case when ds = ' ~ day_literal() ~ ' then 1 when ds = date_sub(' ~ day_literal() ~ ', '
        ~ n ~ ') then -1 else 0 end' -}}
{% endmacro %}
