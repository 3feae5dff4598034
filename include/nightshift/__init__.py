"""nightshift: nightly ETL and training pipelines on Airflow 3, Dask, XGBoost and scikit-learn."""

from __future__ import annotations

__version__ = "0.1.0"
