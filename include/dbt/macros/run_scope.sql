{#- What depends on the run, read when a statement is compiled rather than when the project is
    parsed: dbt renders configs (a model's location, a test's `where`) at parse time, and
    churnflow keeps one parsed manifest for every day it builds (churnflow.dbt_manifest). -#}

{#- Every table model is written under this run's staging folder (var staging_root). -#}
{% macro spark__location_clause() %}
    location '{{ var('staging_root') }}/{{ model['alias'] }}'
{%- endmacro %}


{#- Every data test looks at the run's day only, so a day's checks cost that day's volume; a
    test's own `where` narrows it further. -#}
{% macro spark__get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- set filtered -%}
        (select * from {{ relation }} where ds = {{ day_literal() }}{% if where %} and ({{ where }}){% endif %}) dbt_subquery
    {%- endset -%}
    {{ return(filtered) }}
{%- endmacro %}
