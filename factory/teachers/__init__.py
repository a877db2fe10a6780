"""Teachers: one protocol, two kinds (OpenAI-compatible HTTP, built-in offline)."""
