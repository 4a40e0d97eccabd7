{#- All of a model's row-level checks in one scan. Returns one row per broken rule with the number
    of rows that break it (a rule that evaluates to null counts as broken), so the failure names
    the rule. `rules` is a list of Spark SQL boolean expressions over the model's columns;
    `unique_key`, when given, is a column (or comma-separated columns) no two rows may share,
    checked in the same scan as the rules instead of by a query of its own. -#}
{% test row_rules(model, rules, unique_key=none) %}
with scanned as (
    select
        *{% if unique_key %},
        count(*) over (partition by {{ unique_key }}) as dbt_rows_sharing_key{% endif %}
    from {{ model }}
),

checked as (
    select explode(array(
        {%- for rule in rules %}
        case when not coalesce({{ rule }}, false) then '{{ rule | replace("'", "\\'") }}' end
        {{- ',' if not loop.last or unique_key }}
        {%- endfor %}
        {%- if unique_key %}
        case when dbt_rows_sharing_key > 1 then '{{ unique_key }} is unique' end
        {%- endif %}
    )) as rule
    from scanned
)

select rule, count(*) as failing_rows
from checked
where rule is not null
group by rule
{% endtest %}
