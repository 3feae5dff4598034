"""Publishing: MLflow runs, versions and aliases (``tracking``), the HTML report and the
reports index (``report``, ``report_index``, ``templates/``), and the alerts."""
