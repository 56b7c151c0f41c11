"""The curation job on Ray: shards, the three phases, exact per-source selection, manifest and report."""
