-- EMQX 5 PostgreSQL authentication and authorization against the TMS tables.
-- Paste each query into the EMQX dashboard or emqx.conf (see README.md). EMQX fills
-- ${username} from the CONNECT; placeholders are sent as bind parameters.

-- Authentication (password_hash_algorithm: sha512, salt_position: suffix).
-- Credential.secret_hash is hex SHA-512(secret + salt): exactly what EMQX computes.
-- A revoked credential returns no row, so the login is refused.
SELECT secret_hash AS password_hash, salt
FROM credential
WHERE username = ${username} AND revoked_at IS NULL
LIMIT 1;

-- Authorization: the rows of broker/acl.py GRANTS for the account's kind. '%u' stands
-- for the account's own name and is replaced here, in SQL: EMQX turns every ${...} of
-- the query into a bind parameter, even inside a quoted string, so it cannot go there.
-- A row that names the account applies only to a name fit for a topic level (the
-- serial rules of shared/topics.py). Anything not listed is denied (no_match = deny).
-- Terminals: publish their own telemetry/status/event/cmd-result, subscribe to their cmd.
-- Console (the command sender): commands out, results in, support scripts' requests in,
-- replies out. Support scripts: read what terminals publish; ask for commands only on
-- their own request topic and read only their own replies, never publish on cmd/.
-- retain (EMQX 5 rule field): 'false' makes a publish row match only messages without
-- the retain flag, so a retained heartbeat, event, result, command or reply matches no
-- row and is denied; only status (presence and last will, broker/acl.py
-- RETAINABLE_FILTERS) may be retained ('all'). Subscribe rows ignore it.
SELECT 'allow' AS permission, a.action, replace(a.topic, '%u', c.username) AS topic, a.retain
FROM credential c
JOIN (VALUES
    ('terminal',       'publish',   'tms/v1/%u/telemetry',       'false'),
    ('terminal',       'publish',   'tms/v1/%u/status',          'all'),
    ('terminal',       'publish',   'tms/v1/%u/event',           'false'),
    ('terminal',       'publish',   'tms/v1/%u/cmd-result/+',    'false'),
    ('terminal',       'subscribe', 'tms/v1/%u/cmd/+',           'all'),
    ('ingest',         'subscribe', 'tms/v1/+/telemetry',        'all'),
    ('ingest',         'subscribe', 'tms/v1/+/status',           'all'),
    ('ingest',         'subscribe', 'tms/v1/+/event',            'all'),
    ('ingest',         'subscribe', 'tms/v1/+/cmd-result/+',     'all'),
    ('console',        'publish',   'tms/v1/+/cmd/+',            'false'),
    ('console',        'subscribe', 'tms/v1/+/cmd-result/+',     'all'),
    ('console',        'subscribe', 'tms/requests/+/cmd/+',      'all'),
    ('console',        'publish',   'tms/requests/+/reply/+',    'false'),
    ('support-script', 'subscribe', 'tms/v1/+/telemetry',        'all'),
    ('support-script', 'subscribe', 'tms/v1/+/status',           'all'),
    ('support-script', 'subscribe', 'tms/v1/+/event',            'all'),
    ('support-script', 'subscribe', 'tms/v1/+/cmd-result/+',     'all'),
    ('support-script', 'publish',   'tms/requests/%u/cmd/+',     'false'),
    ('support-script', 'subscribe', 'tms/requests/%u/reply/+',   'all'),
    ('bridge',         'publish',   'tms/v1/+/telemetry',        'false'),
    ('bridge',         'publish',   'tms/v1/+/status',           'all'),
    ('bridge',         'publish',   'tms/v1/+/event',            'false'),
    ('bridge',         'publish',   'tms/v1/+/cmd-result/+',     'false'),
    ('bridge',         'subscribe', 'tms/v1/+/cmd/+',            'all')
) AS a(kind, action, topic, retain) ON a.kind = c.kind
WHERE c.username = ${username} AND c.revoked_at IS NULL
  AND (strpos(a.topic, '%u') = 0 OR c.username ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$');
