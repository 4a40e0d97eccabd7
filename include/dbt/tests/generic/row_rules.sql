{#- Many row-level rules in one scan. Returns one row per broken rule with the number of rows that
    break it (a rule that evaluates to null counts as broken), so the failure names the rule.
    `rules` is a list of Spark SQL boolean expressions over the model's columns. -#}
{% test row_rules(model, rules) %}
with checked as (
    select explode(array(
        {%- for rule in rules %}
        case when not coalesce({{ rule }}, false) then '{{ rule | replace("'", "\\'") }}' end
        {{- ',' if not loop.last }}
        {%- endfor %}
    )) as rule
    from {{ model }}
)

select rule, count(*) as failing_rows
from checked
where rule is not null
group by rule
{% endtest %}
