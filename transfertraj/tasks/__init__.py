"""Airflow task bodies, one module per DAG family; dags/ holds the wiring only.

    from transfertraj.tasks import ingest, pretrain, onboard, maintenance, policy
    ingest.ingest_city_date("porto", "2013-07-01")     # -> {"city", "date", "trajectories_out", ...}
    pretrain.pretrain_base(["porto"], run_key="manual", epochs=3)

| module         | what it produces                                                      | used by              |
|----------------|-----------------------------------------------------------------------|----------------------|
| ingest         | bronze/silver/features of a city's delivery date, its quality report  | nightly_ingest       |
| pretrain       | a registered, gated `transfertraj-base` version                       | pretrain             |
| onboard_params | the trigger model: the DAG's Params; a city config dict, or every problem | onboard_city |
| onboard        | city file, context, features, zero-shot scores, `transfertraj-<city>` | onboard_city         |
| maintenance    | a compacted, vacuumed lake holding every version a model records      | maintenance          |
| training_data  | the features rows of some cities, pinned to one Delta version         | pretrain, onboard    |
| training_run   | a training run's checkpoint folder and its XCom                       | pretrain, onboard    |
| spark          | the Spark session the tasks run on                                    | ingest, onboard, ... |
| policy         | default args, the failure alert, the training pool and queue          | every DAG            |

Every task function takes plain values, loads Settings itself (TRANSFERTRAJ_HOME and friends), imports
Spark, torch and MLflow only when called, and returns JSON-serialisable values (they travel as XComs).
What the DAG files call while they are parsed (city list, Asset URIs, pools, policy) imports nothing
heavy: the scheduler parses them every few seconds.
"""
