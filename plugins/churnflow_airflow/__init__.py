"""Airflow-side code of churnflow: the step factory, its two runners, policy and alerts.

Nothing here imports the task package or a heavy library at DAG-parse time.
"""
