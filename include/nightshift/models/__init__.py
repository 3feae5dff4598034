"""Models: the model kinds (``kinds``), training across the Dask cluster and batch by batch
(``train``, ``xgboost_batches``, ``sgd_workers``), loading a model without running code
(``safe_models``), and finding or starting the Dask cluster (``cluster``)."""
