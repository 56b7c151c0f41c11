"""The curation job on Ray Data: shards, the three phases, exact per-source selection, manifest and report."""
