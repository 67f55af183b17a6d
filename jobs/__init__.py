"""Spark jobs: the session factory, raw-format parsers, cleaning transforms, context join, reports."""
