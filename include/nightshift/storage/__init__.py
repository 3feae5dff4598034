"""Storage: the lake's date partitions, written as versions and committed by a manifest
(``lake``), and the quarantine that keeps offending input with its reason."""
