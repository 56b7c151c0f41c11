"""Online scoring: the batch job's Scorer behind a Ray Serve HTTP endpoint, its client and load generator."""
