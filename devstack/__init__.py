"""Local development stack of churnflow: start/stop services, run the demo (`python -m devstack`).

This is tooling for laptops and CI, not part of what production runs: production has its own
Airflow deployment (images/, include/k8s/) and talks to the same DAGs and steps.
"""
