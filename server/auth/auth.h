/* The auth room's door: who is calling. Bearer tokens are either OIDC access tokens
 * (Keycloak, or the built-in dev issuer with QDB_AUTH_MODE=dev) or service API tokens
 * ("qdb_..."). The room registers the HTTP authentication hook at start; handlers read the
 * caller with http_principal(req). */
#ifndef QDB_AUTH_H
#define QDB_AUTH_H

#include "module.h"
#include "platform/http.h"

extern const struct qdb_module auth_module;

/* Whether the caller of `req` may act on `environment`: API tokens may be limited to a list
 * of environments; people (OIDC, dev) and unrestricted tokens may act on all. 0 when the
 * request has no caller. Handlers answer 403 when this says no. */
int auth_may_act_on(const struct http_request *req, const char *environment);

/* auth_may_act_on, and when it says no: reply 403 (naming the environment), count and log
 * the denial, and return -1. Returns 0 when the caller may act. For handlers:
 *     if (auth_require_environment(req, env) != 0) return; */
int auth_require_environment(struct http_request *req, const char *environment);

/* "viewer", "operator", "admin" ("public" for HTTP_PUBLIC): http_perm_name's answer. */
const char *auth_role_name(enum http_perm role);

/* ---- handlers, for routes.c ---- */
/* GET /api/v1/me: the caller. */
void auth_api_me(struct http_request *req);
/* GET /api/v1/auth/config (public): how the console signs in (mode, issuer, client id,
 * endpoints). */
void auth_api_config(struct http_request *req);
/* GET /api/v1/tokens, POST /api/v1/tokens, DELETE /api/v1/tokens/{id} (admin). */
void auth_api_tokens_list(struct http_request *req);
void auth_api_tokens_create(struct http_request *req);
void auth_api_tokens_revoke(struct http_request *req);
/* The dev issuer (public; 404 unless QDB_AUTH_MODE=dev): discovery, JWKS, the sign-in
 * page, the OAuth token endpoint (code + PKCE, form body) and the JSON token endpoint for
 * scripts (loopback only). */
void auth_dev_discovery(struct http_request *req);
void auth_dev_jwks(struct http_request *req);
void auth_dev_authorize(struct http_request *req);
void auth_dev_oauth_token(struct http_request *req);
void auth_dev_token(struct http_request *req);

#endif
