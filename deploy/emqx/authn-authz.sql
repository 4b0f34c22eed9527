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

-- Authorization: the rows of broker/acl.py GRANTS for the account's kind, with the
-- terminal's own serial substituted. Anything not listed is denied (no_match = deny).
-- Terminals: publish their own telemetry/status/event/cmd-result, subscribe to their cmd.
-- Services: the grants of their kind, never a terminal tree of their own name.
SELECT 'allow' AS permission, a.action, a.topic
FROM credential c
JOIN (VALUES
    ('terminal',       'publish',   'tms/v1/${username}/telemetry'),
    ('terminal',       'publish',   'tms/v1/${username}/status'),
    ('terminal',       'publish',   'tms/v1/${username}/event'),
    ('terminal',       'publish',   'tms/v1/${username}/cmd-result/+'),
    ('terminal',       'subscribe', 'tms/v1/${username}/cmd/+'),
    ('ingest',         'subscribe', 'tms/v1/+/telemetry'),
    ('ingest',         'subscribe', 'tms/v1/+/status'),
    ('ingest',         'subscribe', 'tms/v1/+/event'),
    ('ingest',         'subscribe', 'tms/v1/+/cmd-result/+'),
    ('console',        'publish',   'tms/v1/+/cmd/+'),
    ('console',        'subscribe', 'tms/v1/+/cmd-result/+'),
    ('support-script', 'subscribe', 'tms/v1/+/telemetry'),
    ('support-script', 'subscribe', 'tms/v1/+/status'),
    ('support-script', 'subscribe', 'tms/v1/+/event'),
    ('support-script', 'subscribe', 'tms/v1/+/cmd-result/+')
) AS a(kind, action, topic) ON a.kind = c.kind
WHERE c.username = ${username} AND c.revoked_at IS NULL;
