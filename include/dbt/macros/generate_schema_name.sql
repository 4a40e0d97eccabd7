{#- Schemas are named after the lake areas (`lake`, `staging`, `features`), not prefixed with the
    target's schema: the metastore then reads like the lake it mirrors. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name | trim if custom_schema_name else target.schema }}
{%- endmacro %}
