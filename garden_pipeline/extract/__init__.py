"""Reading Model Garden's /sync/all extract: streaming parse and row validation."""
