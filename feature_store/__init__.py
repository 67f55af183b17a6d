"""The feature store: the one place that names every Delta table (path, partitions, schema) and how
to read a version of it and replace a partition of it."""
