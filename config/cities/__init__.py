"""The city configs bundled with transfertraj, one YAML file per city (schema: transfertraj.core.city_config).

A package only so that they ship inside the wheel (`transfertraj.cities`); add your own cities under
<home>/config/cities or TRANSFERTRAJ_CITY_DIRS, not here.
"""
