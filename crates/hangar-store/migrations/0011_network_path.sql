-- The path of a request the proxy saw (plain HTTP, or inside an intercepted connection).
ALTER TABLE network_log ADD COLUMN path TEXT;
