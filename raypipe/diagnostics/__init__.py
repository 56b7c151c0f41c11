"""The paper's diagnostics: a token-level SFT loss probe and an LLM step judge, and a page comparing sources."""
