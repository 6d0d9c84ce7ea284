/* URLs as messages show them (the log, --check-config's errors, the JWKS
 * cache): a USER:PASSWORD@ part and the values of the query, which may hold
 * an API key or a client secret, hidden; the rest (scheme, host, port, path,
 * the query's parameter names) kept, for the operator to tell which URL it
 * is. Pure; thread-safe. Shared by evhostd and evhostctl (config.c). */
#ifndef EVHOST_REDACT_H
#define EVHOST_REDACT_H

/* url as shown: "***@HOST/PATH?api_key=***&tenant=***" after the scheme. The
 * userinfo (before the last '@' of the authority, which ends at the first
 * '/', '?' or '#' after "://") becomes "***"; each parameter of the query
 * (from the first '?' after the authority to the end, a fragment included)
 * keeps its name and '=' and its value becomes "***", a parameter without
 * '=' becomes "***" whole, an empty one stays empty. malloc'd; NULL out of
 * memory. */
char *redact_url(const char *url);

#endif
