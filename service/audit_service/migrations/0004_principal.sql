-- Who submitted each event, and the chain format version of each row (chain.py).
--
-- principal: the id of the API key (api_keys.id) that submitted the event, or 'admin' for the
-- admin key; NULL for the rows stored before it was recorded.
-- chain_version: which canonical encoding the row's hash covers. The rows already here, and any
-- that a worker of the older release writes until it is replaced, get 1 (without principal);
-- the worker now writes 2 (with it). A constant default adds both columns without rewriting
-- the partitions, and ALTER TABLE on audit_logs adds them to every partition, present and
-- future. audit_runtime's table-wide INSERT and SELECT (0003) cover the new columns.
ALTER TABLE audit_logs
    ADD COLUMN principal text,
    ADD COLUMN chain_version smallint NOT NULL DEFAULT 1;
