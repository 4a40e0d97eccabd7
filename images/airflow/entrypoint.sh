#!/bin/sh
# The Airflow image's entrypoint: the arguments are an Airflow sub-command (compose's
# `command: ["scheduler"]`, `["db", "migrate"]`) or a whole command line, as the official
# Airflow Helm chart and the KubernetesExecutor give them (`bash -c "exec airflow scheduler"`,
# `airflow db check-migrations`, `python -m airflow.sdk.execution_time.execute_workload ...`).
# The official image's entrypoint draws the same line. exec, so the command gets the signals.
set -eu
case "${1:-}" in
    airflow | bash | sh | python | python3 | /*)
        exec "$@"
        ;;
    *)
        exec airflow "$@"
        ;;
esac
