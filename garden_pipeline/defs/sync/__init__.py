"""Pull path: the /sync/all extract assets, the GatewayDB assets, jobs and schedules."""
