"""Asset checks: drift between Model Garden and GatewayDB, and the event path's health."""
