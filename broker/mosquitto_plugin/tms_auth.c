/*
 * tms_auth: what Mosquitto 2.0's password_file and acl_file cannot do for TMS.
 *
 * A plugin (API v5) that only ever REFUSES; password_file and acl_file stay the ones
 * that admit, so a fault here can lock clients out but never let one in:
 *
 *  - brute force: failed logins are counted per client id and per source address in
 *    a bounded table. Past delay_after failures a key must wait before its next
 *    attempt is even checked (a window that doubles with each failure: Mosquitto runs
 *    one thread, so "slowed" means "refused until the window has passed", never a
 *    sleep); past lockout_after failures it is refused for lockout_s seconds, even
 *    with the right secret. One log line per lockout; counters in stats_file.
 *  - identity: a terminal's client id must be its username (serial), and no account
 *    may use a client id that is another account's username, so no valid login can
 *    take over (disconnect) another account's session.
 *  - $share: only accounts marked for it (ingest) may SUBSCRIBE to $share/... (acl_file
 *    grants every SUBACK in 2.0.11, so anyone could join ingest's group and swallow its
 *    messages).
 *  - retain: a PUBLISH (or a will) with the retain flag is refused unless its topic
 *    matches a retain_filter (broker.acl.RETAINABLE_FILTERS: a terminal's status), so no
 *    heartbeat or event is kept and replayed to every new subscriber. acl_file cannot
 *    see the flag; the ACL check event carries it.
 *
 * Account kinds come from accounts_file ("<username> <kind> <share>" per line, rendered
 * from broker/acl.py so the rules stay in one place) and secrets from
 * the same password_file Mosquitto reads ("user:$6$<b64 salt>$<b64 sha512(secret+salt)>"),
 * both written by `tms broker` and re-read on every reload (SIGHUP). On a reload
 * Mosquitto re-checks every connected client through this callback: those re-checks
 * skip the throttle, so a stranger's failures can never disconnect a connected client.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define SALT_MAX 64
#define HASH_LEN 64
#define NAME_MAX_LEN 256
#define BUCKET_SLOTS 8
#define RETAIN_FILTERS_MAX 8

enum kind { KIND_UNKNOWN = 0, KIND_TERMINAL, KIND_SERVICE };

struct account {
	char *username;
	unsigned char salt[SALT_MAX];
	int salt_len;
	unsigned char hash[HASH_LEN];
	enum kind kind;
	bool may_share; /* may SUBSCRIBE to $share/...: broker.acl.may_join_shared_group */
};

struct throttle_slot {
	unsigned char key[16]; /* SHA-512 prefix of "client:<id>" / "address:<ip>" */
	bool used;
	int failures;           /* within the current window */
	int64_t window_start_ms;
	int64_t next_try_ms;    /* attempts before this are refused unchecked (slowed) */
	int64_t locked_until_ms;
	int64_t touched_ms;
};

struct counters {
	unsigned long failures, successes, slowed, refused_locked, lockouts;
	unsigned long client_id_refused, share_refused, retain_refused, reloads;
};

struct state {
	mosquitto_plugin_id_t *id;
	char *password_file, *accounts_file, *stats_file;
	char *retain_filters[RETAIN_FILTERS_MAX];
	int retain_filter_count;
	struct account *accounts;
	size_t account_count;
	bool accounts_ok;
	int delay_after, lockout_after;
	int64_t window_ms, lockout_ms, delay_step_ms, delay_max_ms, stats_interval_ms;
	struct throttle_slot *slots;
	size_t slot_count; /* a multiple of BUCKET_SLOTS */
	bool rechecking;   /* between RELOAD and the next TICK: Mosquitto re-checks sessions */
	struct counters stats;
	bool stats_dirty;
	int64_t stats_written_ms, stats_logged_ms;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool sha512(const void *a, size_t a_len, const void *b, size_t b_len, unsigned char *out)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int len = 0;
	bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) && EVP_DigestUpdate(ctx, a, a_len)
		&& EVP_DigestUpdate(ctx, b, b_len) && EVP_DigestFinal_ex(ctx, out, &len) && len == HASH_LEN;
	EVP_MD_CTX_free(ctx);
	return ok;
}

/* Standard base64 into out (at most max bytes); -1 if malformed or too long. */
static int b64_decode(const char *in, size_t in_len, unsigned char *out, int max)
{
	unsigned char buf[128];
	int len, pad = 0;
	if (in_len == 0 || in_len % 4 != 0 || in_len / 4 * 3 > sizeof(buf)) return -1;
	len = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)in_len);
	if (len < 0) return -1;
	if (in[in_len - 1] == '=') pad++;
	if (in[in_len - 2] == '=') pad++;
	len -= pad; /* EVP_DecodeBlock counts padding as zero bytes */
	if (len > max) return -1;
	memcpy(out, buf, (size_t)len);
	return len;
}

static int by_username(const void *a, const void *b)
{
	return strcmp(((const struct account *)a)->username, ((const struct account *)b)->username);
}

static struct account *find_account(struct state *st, const char *username)
{
	struct account probe = {.username = (char *)username};
	if (!username || !st->accounts) return NULL;
	return bsearch(&probe, st->accounts, st->account_count, sizeof(probe), by_username);
}

static void free_accounts(struct account *accounts, size_t count)
{
	for (size_t i = 0; i < count; i++) free(accounts[i].username);
	free(accounts);
}

static void strip_eol(char *line)
{
	size_t len = strlen(line);
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
}

/* One "user:$6$salt$hash" line; false for anything else (logged by the caller). */
static bool parse_password_line(char *line, struct account *out)
{
	char *colon = strchr(line, ':');
	char *salt, *hash;
	if (!colon || strncmp(colon + 1, "$6$", 3) != 0) return false;
	*colon = '\0';
	salt = colon + 4;
	hash = strchr(salt, '$');
	if (!hash || colon == line || strlen(line) >= NAME_MAX_LEN) return false;
	out->salt_len = b64_decode(salt, (size_t)(hash - salt), out->salt, SALT_MAX);
	hash++;
	if (out->salt_len <= 0 || b64_decode(hash, strlen(hash), out->hash, HASH_LEN) != HASH_LEN) {
		return false;
	}
	out->username = strdup(line);
	out->kind = KIND_UNKNOWN;
	return out->username != NULL;
}

static bool read_passwords(const char *path, struct account **out, size_t *count)
{
	FILE *file = fopen(path, "r");
	char line[1024];
	size_t cap = 0, n = 0, lineno = 0;
	struct account *accounts = NULL;
	if (!file) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "tms_auth: cannot read %s: %s", path, strerror(errno));
		return false;
	}
	while (fgets(line, sizeof(line), file)) {
		lineno++;
		strip_eol(line);
		if (line[0] == '\0' || line[0] == '#') continue;
		if (n == cap) {
			struct account *grown = realloc(accounts, (cap = cap ? cap * 2 : 1024) * sizeof(*grown));
			if (!grown) break;
			accounts = grown;
		}
		if (parse_password_line(line, &accounts[n])) {
			n++;
		} else {
			mosquitto_log_printf(MOSQ_LOG_WARNING, "tms_auth: %s line %zu is not a $6$ entry; ignored",
				path, lineno);
		}
	}
	fclose(file);
	if (n) qsort(accounts, n, sizeof(*accounts), by_username);
	*out = accounts;
	*count = n;
	return true;
}


static bool read_kinds(struct state *st, const char *path)
{
	FILE *file = fopen(path, "r");
	char line[1024], *kind, *share, *rest;
	struct account *account;
	if (!file) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "tms_auth: cannot read %s: %s", path, strerror(errno));
		return false;
	}
	while (fgets(line, sizeof(line), file)) {
		strip_eol(line);
		/* "<username> <kind> <share 0|1>"; a malformed line leaves the account unusable */
		if (line[0] == '#' || !strtok_r(line, " ", &rest)) continue;
		kind = strtok_r(NULL, " ", &rest);
		share = strtok_r(NULL, " ", &rest);
		if (!kind || !share || !(account = find_account(st, line))) continue;
		account->kind = !strcmp(kind, "terminal") ? KIND_TERMINAL : KIND_SERVICE;
		account->may_share = !strcmp(share, "1");
	}
	fclose(file);
	return true;
}

/* Replace the account table from the files; on any failure refuse everyone (fail closed). */
static void load_accounts(struct state *st)
{
	struct account *accounts = NULL;
	size_t count = 0;
	free_accounts(st->accounts, st->account_count);
	st->accounts = NULL;
	st->account_count = 0;
	st->accounts_ok = false;
	if (!read_passwords(st->password_file, &accounts, &count)) return;
	st->accounts = accounts;
	st->account_count = count;
	if (!read_kinds(st, st->accounts_file)) return;
	st->accounts_ok = true;
	mosquitto_log_printf(MOSQ_LOG_INFO, "tms_auth: %zu accounts loaded", count);
}

/* ---- throttle: a set-associative table of keys, bounded at slot_count entries ---- */

static struct throttle_slot *throttle_slot(struct state *st, const char *prefix, const char *value,
	bool create, int64_t now)
{
	unsigned char digest[HASH_LEN];
	struct throttle_slot *bucket, *victim = NULL;
	size_t index;
	if (!value || !value[0] || !sha512(prefix, strlen(prefix), value, strlen(value), digest)) return NULL;
	memcpy(&index, digest + 16, sizeof(index));
	bucket = &st->slots[(index % (st->slot_count / BUCKET_SLOTS)) * BUCKET_SLOTS];
	for (int i = 0; i < BUCKET_SLOTS; i++) {
		struct throttle_slot *slot = &bucket[i];
		if (slot->used && !memcmp(slot->key, digest, sizeof(slot->key))) {
			if (slot->locked_until_ms <= now && now - slot->window_start_ms > st->window_ms) {
				slot->failures = 0; /* old failures fall out of the count */
				slot->window_start_ms = now;
				slot->next_try_ms = 0;
			}
			return slot;
		}
		/* Evict a free slot, else the least recently touched one that is not locked. */
		if (!slot->used) {
			if (!victim || victim->used) victim = slot;
		} else if (slot->locked_until_ms <= now && (!victim || (victim->used && slot->touched_ms < victim->touched_ms))) {
			victim = slot;
		}
	}
	if (!create) return NULL;
	if (!victim) victim = &bucket[digest[24] % BUCKET_SLOTS]; /* all locked: a flood; bounded */
	memset(victim, 0, sizeof(*victim));
	memcpy(victim->key, digest, sizeof(victim->key));
	victim->used = true;
	victim->window_start_ms = now;
	victim->touched_ms = now;
	return victim;
}

/* Why an attempt may not even be checked now: NULL if it may. */
static const char *throttle_refusal(const struct throttle_slot *slot, int64_t now)
{
	if (!slot) return NULL;
	if (slot->locked_until_ms > now) return "locked out";
	if (slot->next_try_ms > now) return "slowed";
	return NULL;
}

static void throttle_failure(struct state *st, struct throttle_slot *slot, const char *key_name,
	const char *key_value, int64_t now)
{
	if (!slot) return;
	slot->touched_ms = now;
	slot->failures++;
	if (slot->failures >= st->lockout_after) {
		slot->locked_until_ms = now + st->lockout_ms;
		slot->failures = 0;
		slot->next_try_ms = 0;
		slot->window_start_ms = slot->locked_until_ms;
		st->stats.lockouts++;
		mosquitto_log_printf(MOSQ_LOG_WARNING,
			"tms_auth: too many failed logins for %s %s: refused for %lld s "
			"(failures=%lu lockouts=%lu refused_locked=%lu slowed=%lu)",
			key_name, key_value, (long long)(st->lockout_ms / 1000), st->stats.failures,
			st->stats.lockouts, st->stats.refused_locked, st->stats.slowed);
	} else if (slot->failures >= st->delay_after) {
		int steps = slot->failures - st->delay_after;
		int64_t wait = st->delay_step_ms << (steps > 20 ? 20 : steps);
		slot->next_try_ms = now + (wait > st->delay_max_ms ? st->delay_max_ms : wait);
	}
}

/* ---- metrics: a stats file `tms broker` and operators read, and a periodic log line ---- */

static void write_stats(struct state *st)
{
	char tmp[4096];
	FILE *file;
	if (!st->stats_file) return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", st->stats_file);
	if (!(file = fopen(tmp, "w"))) return;
	fprintf(file,
		"failures %lu\nsuccesses %lu\nslowed %lu\nrefused_locked %lu\nlockouts %lu\n"
		"client_id_refused %lu\nshare_refused %lu\nretain_refused %lu\nreloads %lu\naccounts %zu\n",
		st->stats.failures, st->stats.successes, st->stats.slowed, st->stats.refused_locked,
		st->stats.lockouts, st->stats.client_id_refused, st->stats.share_refused,
		st->stats.retain_refused, st->stats.reloads, st->account_count);
	if (fclose(file) == 0) rename(tmp, st->stats_file);
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct state *st = userdata;
	int64_t now = now_ms();
	(void)event;
	(void)event_data;
	st->rechecking = false;
	if (st->stats_dirty && now - st->stats_written_ms >= 1000) {
		write_stats(st);
		st->stats_written_ms = now;
		st->stats_dirty = false;
	}
	if (now - st->stats_logged_ms >= st->stats_interval_ms) {
		st->stats_logged_ms = now;
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"tms_auth: logins failures=%lu successes=%lu slowed=%lu refused_locked=%lu lockouts=%lu "
			"client_id_refused=%lu share_refused=%lu retain_refused=%lu",
			st->stats.failures, st->stats.successes, st->stats.slowed, st->stats.refused_locked,
			st->stats.lockouts, st->stats.client_id_refused, st->stats.share_refused,
			st->stats.retain_refused);
	}
	return MOSQ_ERR_SUCCESS;
}

/* ---- the checks ---- */

static bool secret_matches(const struct account *account, const char *password)
{
	unsigned char digest[HASH_LEN];
	if (!password || !sha512(password, strlen(password), account->salt, (size_t)account->salt_len, digest)) {
		return false;
	}
	return CRYPTO_memcmp(digest, account->hash, HASH_LEN) == 0;
}

/* A client id that names an account may only be used by that account, and a terminal
 * must use its own: otherwise one valid login could take over another's session. */
static const char *client_id_refusal(struct state *st, const struct account *account, const char *client_id)
{
	const struct account *named;
	if (!client_id) return "no client id";
	if (account->kind == KIND_TERMINAL && strcmp(client_id, account->username) != 0) {
		return "a terminal's client id must be its serial";
	}
	named = find_account(st, client_id);
	if (named && named != account) return "the client id is another account's username";
	return NULL;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct state *st = userdata;
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	const char *address = mosquitto_client_address(ed->client);
	const struct account *account;
	const char *why;
	int64_t now = now_ms();
	struct throttle_slot *by_id = NULL, *by_address = NULL;
	(void)event;

	if (!st->accounts_ok) return MOSQ_ERR_AUTH; /* the files could not be read: fail closed */
	account = find_account(st, ed->username);
	if (st->rechecking) {
		/* A reload re-checks connected sessions: no throttle, nothing counted. */
		if (!account || account->kind == KIND_UNKNOWN || !secret_matches(account, ed->password)
			|| client_id_refusal(st, account, client_id)) {
			return MOSQ_ERR_AUTH;
		}
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	st->stats_dirty = true;
	by_id = throttle_slot(st, "client:", client_id, false, now);
	by_address = throttle_slot(st, "address:", address, false, now);
	if ((why = throttle_refusal(by_id, now)) || (why = throttle_refusal(by_address, now))) {
		if (!strcmp(why, "slowed")) st->stats.slowed++;
		else st->stats.refused_locked++;
		return MOSQ_ERR_AUTH;
	}
	if (!account || account->kind == KIND_UNKNOWN || !secret_matches(account, ed->password)) {
		st->stats.failures++;
		throttle_failure(st, throttle_slot(st, "client:", client_id, true, now), "client id", client_id, now);
		throttle_failure(st, throttle_slot(st, "address:", address, true, now), "address", address, now);
		return MOSQ_ERR_AUTH;
	}
	if ((why = client_id_refusal(st, account, client_id)) != NULL) {
		st->stats.client_id_refused++;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "tms_auth: login of %s with client id %s refused: %s",
			account->username, client_id ? client_id : "(none)", why);
		return MOSQ_ERR_AUTH;
	}
	st->stats.successes++;
	if (by_id) by_id->used = false; /* the owner logged in: its id starts afresh */
	/* password_file has the last word: this plugin only ever refuses. */
	return MOSQ_ERR_PLUGIN_DEFER;
}

static bool may_retain(const struct state *st, const char *topic)
{
	for (int i = 0; i < st->retain_filter_count; i++) {
		bool match = false;
		if (mosquitto_topic_matches_sub(st->retain_filters[i], topic, &match) == MOSQ_ERR_SUCCESS && match) {
			return true;
		}
	}
	return false;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct state *st = userdata;
	struct mosquitto_evt_acl_check *ed = event_data;
	const struct account *account;
	const char *username = mosquitto_client_username(ed->client);
	(void)event;
	if (ed->access == MOSQ_ACL_WRITE && ed->retain && !may_retain(st, ed->topic)) {
		st->stats.retain_refused++;
		st->stats_dirty = true;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "tms_auth: %s may not retain a message on %s",
			username ? username : "(anonymous)", ed->topic);
		return MOSQ_ERR_ACL_DENIED;
	}
	if (ed->access != MOSQ_ACL_SUBSCRIBE || strncmp(ed->topic, "$share/", 7) != 0) {
		return MOSQ_ERR_PLUGIN_DEFER; /* acl_file decides */
	}
	account = find_account(st, username);
	if (account && account->may_share) return MOSQ_ERR_PLUGIN_DEFER;
	st->stats.share_refused++;
	st->stats_dirty = true;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "tms_auth: %s may not subscribe to %s",
		username ? username : "(anonymous)", ed->topic);
	return MOSQ_ERR_ACL_DENIED;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	struct state *st = userdata;
	(void)event;
	(void)event_data;
	load_accounts(st);
	st->stats.reloads++;
	st->stats_dirty = true;
	st->rechecking = true;
	return MOSQ_ERR_SUCCESS;
}

/* ---- plugin entry points ---- */

static bool option_int(const char *value, long min, long max, long *out)
{
	char *end;
	long parsed = strtol(value, &end, 10);
	if (*value == '\0' || *end != '\0' || parsed < min || parsed > max) return false;
	*out = parsed;
	return true;
}

static int read_options(struct state *st, struct mosquitto_opt *opts, int count)
{
	long delay_after = 5, lockout_after = 10, window_s = 60, lockout_s = 300;
	long delay_step_ms = 500, delay_max_ms = 5000, table_size = 65536, stats_interval_s = 60;
	for (int i = 0; i < count; i++) {
		const char *key = opts[i].key, *value = opts[i].value;
		bool ok = true;
		if (!strcmp(key, "password_file")) st->password_file = strdup(value);
		else if (!strcmp(key, "accounts_file")) st->accounts_file = strdup(value);
		else if (!strcmp(key, "stats_file")) st->stats_file = strdup(value);
		else if (!strcmp(key, "retain_filter")) {
			ok = st->retain_filter_count < RETAIN_FILTERS_MAX
				&& mosquitto_sub_topic_check(value) == MOSQ_ERR_SUCCESS;
			if (ok) st->retain_filters[st->retain_filter_count++] = strdup(value);
		}
		else if (!strcmp(key, "delay_after")) ok = option_int(value, 1, 1000000, &delay_after);
		else if (!strcmp(key, "lockout_after")) ok = option_int(value, 2, 1000000, &lockout_after);
		else if (!strcmp(key, "window_s")) ok = option_int(value, 1, 86400, &window_s);
		else if (!strcmp(key, "lockout_s")) ok = option_int(value, 1, 86400 * 30, &lockout_s);
		else if (!strcmp(key, "delay_step_ms")) ok = option_int(value, 1, 60000, &delay_step_ms);
		else if (!strcmp(key, "delay_max_ms")) ok = option_int(value, 1, 600000, &delay_max_ms);
		else if (!strcmp(key, "table_size")) ok = option_int(value, 64, 1 << 24, &table_size);
		else if (!strcmp(key, "stats_interval_s")) ok = option_int(value, 1, 86400, &stats_interval_s);
		else ok = false;
		if (!ok) {
			mosquitto_log_printf(MOSQ_LOG_ERR, "tms_auth: bad option plugin_opt_%s %s", key, value);
			return MOSQ_ERR_INVAL;
		}
	}
	if (!st->password_file || !st->accounts_file || !st->retain_filter_count) {
		mosquitto_log_printf(MOSQ_LOG_ERR, "tms_auth: plugin_opt_password_file, plugin_opt_accounts_file "
			"and plugin_opt_retain_filter are required");
		return MOSQ_ERR_INVAL;
	}
	st->delay_after = (int)delay_after;
	st->lockout_after = (int)lockout_after;
	st->window_ms = window_s * 1000;
	st->lockout_ms = lockout_s * 1000;
	st->delay_step_ms = delay_step_ms;
	st->delay_max_ms = delay_max_ms;
	st->stats_interval_ms = stats_interval_s * 1000;
	st->slot_count = ((size_t)table_size + BUCKET_SLOTS - 1) / BUCKET_SLOTS * BUCKET_SLOTS;
	return MOSQ_ERR_SUCCESS;
}

static void free_state(struct state *st)
{
	if (!st) return;
	free_accounts(st->accounts, st->account_count);
	free(st->slots);
	free(st->password_file);
	free(st->accounts_file);
	free(st->stats_file);
	for (int i = 0; i < st->retain_filter_count; i++) free(st->retain_filters[i]);
	free(st);
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
	struct mosquitto_opt *opts, int opt_count)
{
	struct state *st = calloc(1, sizeof(*st));
	int rc;
	if (!st) return MOSQ_ERR_NOMEM;
	st->id = identifier;
	if ((rc = read_options(st, opts, opt_count)) != MOSQ_ERR_SUCCESS) goto fail;
	if (!(st->slots = calloc(st->slot_count, sizeof(*st->slots)))) {
		rc = MOSQ_ERR_NOMEM;
		goto fail;
	}
	load_accounts(st);
	if (!st->accounts_ok) {
		rc = MOSQ_ERR_INVAL;
		goto fail;
	}
	st->stats_logged_ms = now_ms();
	write_stats(st);
	if ((rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, st))
		|| (rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, st))
		|| (rc = mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, st))
		|| (rc = mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, st))) {
		goto fail;
	}
	*userdata = st;
	mosquitto_log_printf(MOSQ_LOG_INFO,
		"tms_auth: loaded (slow down after %d failures, lock out after %d for %lld s, %zu-key table)",
		st->delay_after, st->lockout_after, (long long)(st->lockout_ms / 1000), st->slot_count);
	return MOSQ_ERR_SUCCESS;
fail:
	mosquitto_log_printf(MOSQ_LOG_ERR, "tms_auth: not started (error %d)", rc);
	free_state(st);
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	struct state *st = userdata;
	(void)opts;
	(void)opt_count;
	if (!st) return MOSQ_ERR_SUCCESS;
	mosquitto_callback_unregister(st->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(st->id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(st->id, MOSQ_EVT_RELOAD, on_reload, NULL);
	mosquitto_callback_unregister(st->id, MOSQ_EVT_TICK, on_tick, NULL);
	write_stats(st);
	free_state(st);
	return MOSQ_ERR_SUCCESS;
}
