"""Configuration: the pipeline YAML parsed once into a typed, validated object (``pipeline``),
the records the stages hand each other (``records``), the ``derive``/``filter`` expression
language, the run-date rules (``run_date``), live progress lines and stage profiles."""
