"""Everything that reads or writes GatewayDB: schema, staging, the apply (upsert) function, bookkeeping."""
