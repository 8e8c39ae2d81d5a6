"""Embedded servers for the no-install default: real PostgreSQL and real Redis from wheels."""
