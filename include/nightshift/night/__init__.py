"""The night: what each stage does, in order (``stages``), and what they share: the
window's inputs (``inputs``), scoring (``scoring``) and what a night says (``summary``)."""
