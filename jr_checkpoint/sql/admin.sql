-- What `jr-checkpoint migrate --check` asks about the connecting role, one "-- name: ..." each.
-- Kept apart from queries.sql: these run only from the command line, never per step.

-- name: missing_privileges
-- Everything the connecting role (current_user) lacks to do a worker's job, one row each:
-- SELECT, INSERT, UPDATE, DELETE on each table; USAGE on the sequence behind each SERIAL
-- column (an INSERT calls nextval() on it); EXECUTE on each function the store calls.
-- Tables that do not exist are skipped (the schema check names them). A function that does
-- not exist comes back with a NULL privilege.
WITH tables AS (
    SELECT to_regclass(given.name) AS oid, given.ord
    FROM unnest(%(tables)s::text[]) WITH ORDINALITY AS given(name, ord)
    WHERE to_regclass(given.name) IS NOT NULL
), sequences AS (
    SELECT to_regclass(pg_get_serial_sequence(t.oid::regclass::text, a.attname)) AS oid,
           t.ord, a.attnum
    FROM tables t
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE pg_get_serial_sequence(t.oid::regclass::text, a.attname) IS NOT NULL
)
SELECT privilege, kind, name FROM (
    SELECT 1 AS rank, t.ord, p.ord AS sub, p.privilege, 'table' AS kind, c.relname::text AS name
    FROM tables t
    JOIN pg_class c ON c.oid = t.oid
    CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) WITH ORDINALITY AS p(privilege, ord)
    WHERE NOT has_table_privilege(t.oid, p.privilege)
    UNION ALL
    SELECT 2, s.ord, s.attnum, 'USAGE', 'sequence', c.relname::text
    FROM sequences s
    JOIN pg_class c ON c.oid = s.oid
    WHERE NOT has_sequence_privilege(s.oid, 'USAGE')
    UNION ALL
    SELECT 3, f.ord, 0,
           CASE WHEN to_regprocedure(f.signature) IS NOT NULL THEN 'EXECUTE' END,
           'function', f.signature
    FROM unnest(%(functions)s::text[]) WITH ORDINALITY AS f(signature, ord)
    WHERE to_regprocedure(f.signature) IS NULL
       OR NOT has_function_privilege(to_regprocedure(f.signature), 'EXECUTE')
) missing
ORDER BY rank, ord, sub;

-- name: current_role
SELECT current_user;
