"""The data stages: the built-in generator, reading a source (``ingest``), the schema checks
(``validate``), the per-batch transforms (``preprocess``) and the feature statistics."""
