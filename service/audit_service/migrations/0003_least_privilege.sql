-- Least privilege. Migrations run as the database's owner. The API and the worker log in as
-- members of the group role audit_runtime, retention as a member of audit_retention; the
-- deployment (role postgresql) or the test stack makes both group roles before migrations run.
--
-- audit_runtime appends events and reads them: it can neither change nor remove one (no UPDATE,
-- DELETE or TRUNCATE on audit_logs), so the service's own credentials cannot rewrite history.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT SELECT, INSERT ON audit_logs TO audit_runtime;
GRANT SELECT, INSERT, UPDATE ON chain_heads TO audit_runtime;
GRANT SELECT, INSERT ON tenants, api_keys TO audit_runtime;
GRANT SELECT ON chain_anchors, retention_runs, schema_migrations TO audit_runtime;
GRANT SELECT, INSERT, DELETE ON dead_letters TO audit_runtime;
GRANT USAGE ON SEQUENCE dead_letters_id_seq TO audit_runtime;

-- audit_retention removes what is older than the retention window, and notes where it cut.
GRANT SELECT, DELETE ON audit_logs TO audit_retention;
GRANT SELECT ON chain_heads, tenants TO audit_retention;
GRANT SELECT, INSERT, UPDATE ON chain_anchors TO audit_retention;
GRANT SELECT, INSERT ON retention_runs TO audit_retention;
GRANT USAGE ON SEQUENCE retention_runs_id_seq TO audit_retention;

-- Only audit_logs' owner may add or drop its partitions: these two functions do it for the
-- others (SECURITY DEFINER), and nothing else. The worker creates a month on demand; retention
-- drops a month that holds nothing newer than its cut.
CREATE FUNCTION audit_create_partition(month_start timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first timestamptz := date_trunc('month', month_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := 'audit_logs_p' || to_char(first AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF first <> month_start THEN
        RAISE EXCEPTION 'a partition starts at the first of a month (UTC), not at %', month_start;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                   name, first, first + interval '1 month');
    RETURN name;
END $$;
REVOKE ALL ON FUNCTION audit_create_partition(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_create_partition(timestamptz) TO audit_runtime, audit_retention;

CREATE FUNCTION audit_drop_partition(partition text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    WHERE i.inhparent = 'audit_logs'::regclass AND c.relname = partition) THEN
        RAISE EXCEPTION '% is not a partition of audit_logs', partition;
    END IF;
    EXECUTE format('DROP TABLE %I', partition);
END $$;
REVOKE ALL ON FUNCTION audit_drop_partition(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_drop_partition(text) TO audit_retention;
