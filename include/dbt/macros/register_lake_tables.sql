{#- The lake is the source of truth; the metastore is only a cache of it. On every run this
    checks that the lake's datasets are registered as external tables (columns and types from the
    .yml files) with the partitions the lake has, so a fresh metastore (a new pod, a lost Derby
    folder) rebuilds itself from the lake instead of dbt trying to create tables over existing
    data. The check is cheap when nothing changed (one listing per schema, which dbt does anyway,
    and one `show partitions` per source); tables are created, and partitions added or dropped,
    only when they differ from the lake.

    Sources: `meta.external` gives the folder under the lake and the file format, or the var that
    names the format (`format_var`) for an optional dataset; when that var is empty the dataset
    is absent and is registered as an empty managed table, so models read zero rows and nothing
    is written into the lake.
    Models: those with `meta.publish_to` get a published table (`features.<alias>` at
    <lake>/<publish_to>/<alias>) that later runs read history from; churnflow.features publishes
    into it by moving staged partition folders, so its partitions are repaired like a source's.
    -#}
{% macro register_lake_tables() %}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- for source in graph.sources.values() if source.meta.get('external') -%}
        {%- do register_source_table(source) -%}
    {%- endfor -%}
    {%- for node in graph.nodes.values()
        if node.resource_type == 'model' and node.config.meta.get('publish_to') -%}
        {%- do register_published_table(node) -%}
    {%- endfor -%}
    {{ return('') }}
{% endmacro %}


{% macro register_source_table(source) %}
    {%- set external = source.meta.external -%}
    {%- set relation = api.Relation.create(
        schema=source.schema, identifier=source.identifier, type='table') -%}
    {%- set file_format = var(external.format_var) if external.get('format_var')
        else external.format -%}
    {%- set options = external.get('csv_options', {}) if file_format == 'csv' else {} -%}
    {%- set existing = adapter.get_relation(
        database=none, schema=source.schema, identifier=source.identifier) -%}
    {%- if file_format -%}
        {%- set location = var('lake') ~ '/' ~ external.location -%}
        {%- if existing is not none -%}
            {%- set details = table_details(existing) -%}
            {%- if details.location != canonical_location(location)
                or details.provider != file_format -%}
                {%- do run_query('drop table ' ~ relation) -%}
                {%- set existing = none -%}
            {%- endif -%}
        {%- endif -%}
        {%- if existing is none -%}
            {%- do run_query('create schema if not exists ' ~ source.schema) -%}
            {%- do run_query(table_ddl(relation, source.columns, file_format, options, location)) -%}
            {%- do run_query('msck repair table ' ~ relation ~ ' sync partitions') -%}
        {%- else -%}
            {%- do sync_partitions(relation, external.location) -%}
        {%- endif -%}
    {%- else -%}
        {%- do run_query('create schema if not exists ' ~ source.schema) -%}
        {%- do run_query('drop table if exists ' ~ relation) -%}
        {%- do run_query(table_ddl(relation, source.columns, 'parquet', {}, none)) -%}
    {%- endif -%}
{% endmacro %}


{#- The partitions the metastore knows must be the lake's folders. churnflow.features lists the
    lake's (`lake_partitions`, folder names `ds=YYYY-MM-DD` per dataset); the ones that differ
    are added or dropped by name, which costs one statement, where a repair lists every folder
    (half a second at a few hundred days). Without the var the table is repaired. A rerun
    replaces a day's files under the same folder name; Spark keeps no cached file listing to go
    stale (`spark.sql.hive.filesourcePartitionFileCacheSize=0`, churnflow.spark.SESSION_SETTINGS). -#}
{% macro sync_partitions(relation, location) %}
    {%- set lake = var('lake_partitions', {}).get(location) -%}
    {%- if lake is none -%}
        {%- do run_query('msck repair table ' ~ relation ~ ' sync partitions') -%}
        {{ return('') }}
    {%- endif -%}
    {%- set known = run_query('show partitions ' ~ relation).columns[0].values() -%}
    {%- set missing = [] -%}
    {%- for name in lake if name not in known -%}
        {%- do missing.append(partition_spec(name)) -%}
    {%- endfor -%}
    {%- set gone = [] -%}
    {%- for name in known if name not in lake -%}
        {%- do gone.append(partition_spec(name)) -%}
    {%- endfor -%}
    {%- if missing -%}
        {%- do run_query('alter table ' ~ relation ~ ' add if not exists ' ~ missing | join(' ')) -%}
    {%- endif -%}
    {%- if gone -%}
        {%- do run_query('alter table ' ~ relation ~ ' drop if exists ' ~ gone | join(', ')) -%}
    {%- endif -%}
{% endmacro %}


{#- `ds=2026-01-31` -> `partition (ds='2026-01-31')`. -#}
{% macro partition_spec(name) %}
    {%- set key, value = name.split('=', 1) -%}
    {{ return("partition (" ~ key ~ "='" ~ value ~ "')") }}
{% endmacro %}


{% macro register_published_table(node) %}
    {%- set relation = published(node.alias) -%}
    {%- set folder = node.config.meta.publish_to ~ '/' ~ node.alias -%}
    {%- set location = var('lake') ~ '/' ~ folder -%}
    {%- set existing = adapter.get_relation(
        database=none, schema=relation.schema, identifier=node.alias) -%}
    {%- if existing is not none
        and table_details(existing).location != canonical_location(location) -%}
        {#- Registered for another lake (tests, a moved lake): point it at this one. -#}
        {%- do run_query('drop table ' ~ relation) -%}
        {%- set existing = none -%}
    {%- endif -%}
    {%- if existing is none -%}
        {%- do run_query('create schema if not exists ' ~ relation.schema) -%}
        {%- do run_query(table_ddl(relation, node.columns, node.config.file_format, {}, location)) -%}
        {%- do run_query('msck repair table ' ~ relation ~ ' sync partitions') -%}
    {%- else -%}
        {%- do sync_partitions(relation, folder) -%}
    {%- endif -%}
{% endmacro %}


{#- Where the metastore says a table's files are (spelled as canonical_location spells it) and
    in which format. dbt-spark's relation cache already holds this (`show table extended`
    output); only a relation without it costs a `describe`. -#}
{% macro table_details(relation) %}
    {%- set details = {'location': '', 'provider': ''} -%}
    {%- set information = relation.information if relation.information else '' -%}
    {%- if information -%}
        {%- set rows = [] -%}
        {%- for line in information.split('\n') if ': ' in line -%}
            {%- do rows.append(line.split(': ', 1)) -%}
        {%- endfor -%}
    {%- else -%}
        {%- set rows = run_query('describe table extended ' ~ relation) -%}
    {%- endif -%}
    {%- for row in rows -%}
        {%- if row[0] == 'Location' -%}
            {%- do details.update({'location': canonical_location(row[1])}) -%}
        {%- elif row[0] == 'Provider' -%}
            {%- do details.update({'provider': row[1] | lower}) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(details) }}
{% endmacro %}


{#- Spark prints local paths as file:/x; the lake var may say file:///x. -#}
{% macro canonical_location(location) %}
    {{ return(location | replace('file:///', 'file:/') | trim('/')) }}
{% endmacro %}


{#- `create table if not exists` for a dataset partitioned by `ds` (the last column). -#}
{% macro table_ddl(relation, columns, file_format, options, location) %}
    {%- set names = columns.keys() | list -%}
    {%- if names[-1] != 'ds' -%}
        {{ exceptions.raise_compiler_error(relation ~ ': the last column in the .yml must be ds') }}
    {%- endif -%}
    {%- set ddl -%}
        create table if not exists {{ relation }} (
            {%- for name, column in columns.items() %}
            {{ name }} {{ column.data_type }}{{ ',' if not loop.last }}
            {%- endfor %}
        )
        using {{ file_format }}
        {%- if options %}
        options ({% for key, value in options.items() %}'{{ key }}' '{{ value }}'{{ ', ' if not loop.last }}{% endfor %})
        {%- endif %}
        partitioned by (ds)
        {%- if location %}
        location '{{ location }}'
        {%- endif %}
    {%- endset -%}
    {{ return(ddl) }}
{% endmacro %}
