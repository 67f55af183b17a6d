"""Airflow task bodies, one module per DAG family; dags/ holds the wiring only."""
