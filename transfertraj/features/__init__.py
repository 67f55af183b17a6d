"""Per-point feature functions in numpy and Arrow, one implementation for the Spark jobs and for serving.

    from transfertraj.features.metric_coordinates import metric_xy
    from transfertraj.features.temporal import temporal_fields
    from transfertraj.features.context import context_vectors, load_city_context
    from transfertraj.features.trajectory import feature_rows

The Spark jobs (jobs/featurize.py, jobs/context_density.py, jobs/metric_coordinates.py) call these inside
their Arrow workers (mapInArrow); the served model (transfertraj.serving) calls them on the request's
points. Nothing here imports pyspark or delta-spark: a served model needs no JVM and no lake.
"""
