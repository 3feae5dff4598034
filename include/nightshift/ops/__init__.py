"""Operations: running nightshift's services, not what a night computes.

``local_airflow`` starts and stops the embedded Airflow services and Dask cluster (the
``nightshift up`` default); ``airflow_api`` is the client of any Airflow's REST API (the local
one, the compose stack's); ``executor`` is the preloading LocalExecutor; ``production`` checks
a deployment's settings before it starts. Nothing in the domain modules imports from here.
"""
