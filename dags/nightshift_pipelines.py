"""
### nightshift nightly pipelines

One Airflow DAG per pipeline YAML in `include/pipelines/`: ingest the run's date, validate it,
batch and preprocess it with Dask, train XGBoost (`xgboost.dask`) and batch-wise scikit-learn
models on the rolling training window, evaluate on the held-out day, publish the report.

A run processes the day its data interval starts (scheduled and backfill runs), the trigger
form's **Run date**, or else the last complete day. Add a pipeline by adding a YAML; a broken
YAML is reported as a parse warning naming the file and key, and the other pipelines load.
"""

from nightshift.airflow_dag import build_dags

globals().update(build_dags(__doc__ or ""))
