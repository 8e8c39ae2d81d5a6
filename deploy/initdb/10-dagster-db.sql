-- Dagster's own storage lives in its own database beside GatewayDB.
CREATE DATABASE dagster;
