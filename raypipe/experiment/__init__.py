"""The paper's experiment: arms x (curate -> SFT -> eval), resumable, with one results table."""
