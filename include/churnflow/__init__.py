"""churnflow task package: the work behind every pipeline step, runnable without Airflow."""

__version__ = "0.1.0"
