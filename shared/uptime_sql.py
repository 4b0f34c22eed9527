"""Terminals' uptime over a period worked out in PostgreSQL, by the rules of
console.uptime (which stays the reference, and the store page's own code).

The fleet's monthly report at 100,000 terminals spent 2.6 s of its 2.8 s turning each
terminal's status changes into seconds in Python; here the database does it next to the
rows, per terminal (a LATERAL over status_change's (terminal_id, at) index: the last
change at or before the terminal's window opens, then its changes inside it), and the
report receives store and customer sums and the worst terminals instead of 100,000 rows.
tests/integration/test_uptime_sql.py holds the two to the same answers.
"""

from __future__ import annotations

# Per terminal in service during [:start, :end) (already cut to the present), scoped to
# :customer (NULL: every customer): its seconds online and in service. The window
# starts at the later of :start and its installation (or creation) and ends at the
# earlier of :end and its decommissioning. Before its first change a terminal's status
# is unknown, so time before it is not online; of changes at one instant the last
# recorded (highest id) wins, its predecessors lasting no time.
TERMINAL_UPTIME = """
SELECT t.id, t.serial, c.name AS customer, s.code AS store_code, s.name AS store_name,
       t.status, t.firmware_version, u.online_s,
       CAST(extract(epoch FROM w.we - w.ws) AS double precision) AS in_service_s
FROM terminal t
JOIN customer c ON c.id = t.customer_id
LEFT JOIN store s ON s.id = t.store_id
CROSS JOIN LATERAL (
    SELECT GREATEST(CAST(:start AS timestamptz), COALESCE(t.installed_at, t.created_at)) AS ws,
           LEAST(CAST(:end AS timestamptz),
                 COALESCE(t.decommissioned_at, CAST('infinity' AS timestamptz))) AS we
) w
CROSS JOIN LATERAL (
    SELECT COALESCE(sum(CAST(extract(epoch FROM LEAST(y.next_at, w.we) - GREATEST(y.at, w.ws))
                             AS double precision)) FILTER (WHERE y.status = 'online'),
                    0) AS online_s
    FROM (
        SELECT x.at, x.status,
               lead(x.at, 1, CAST('infinity' AS timestamptz)) OVER (ORDER BY x.at, x.id)
                   AS next_at
        FROM (
            (SELECT sc.at, sc.new_status AS status, sc.id FROM status_change sc
             WHERE sc.terminal_id = t.id AND sc.at <= w.ws
             ORDER BY sc.at DESC, sc.id DESC LIMIT 1)
            UNION ALL
            (SELECT sc.at, sc.new_status, sc.id FROM status_change sc
             WHERE sc.terminal_id = t.id AND sc.at > w.ws AND sc.at < w.we)
        ) x
    ) y
) u
WHERE (CAST(:customer AS integer) IS NULL OR t.customer_id = :customer)
  AND w.ws < w.we
"""

# The fleet's figures in one statement: a row per store ('store'), per customer
# ('customer'), and the :worst terminals by share ('worst'), lowest first.
FLEET_UPTIME = f"""
WITH pt AS MATERIALIZED ({TERMINAL_UPTIME})
SELECT 'store' AS part, customer, store_code, max(store_name) AS store_name,
       CAST(NULL AS text) AS serial, CAST(NULL AS text) AS status,
       CAST(NULL AS text) AS firmware, count(*) AS terminals,
       sum(online_s) AS online_s, sum(in_service_s) AS in_service_s
FROM pt GROUP BY customer, store_code
UNION ALL
SELECT 'customer', customer, NULL, NULL, NULL, NULL, NULL, count(*),
       sum(online_s), sum(in_service_s)
FROM pt GROUP BY customer
UNION ALL
(SELECT 'worst', customer, store_code, store_name, serial, status, firmware_version, 1,
        online_s, in_service_s
 FROM pt ORDER BY online_s / in_service_s, customer, serial LIMIT :worst)
"""
