/* API token secrets and the rules for what a token may be called and limited to. */
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_internal.h"

char *auth_api_token_new(void)
{
    unsigned char rnd[32];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return NULL;
    char *b64 = b64url_encode(rnd, sizeof rnd);
    OPENSSL_cleanse(rnd, sizeof rnd);
    if (!b64)
        return NULL;
    size_t plen = strlen(AUTH_API_TOKEN_PREFIX), blen = strlen(b64);
    char *tok = malloc(plen + blen + 1);
    if (tok) {
        memcpy(tok, AUTH_API_TOKEN_PREFIX, plen);
        memcpy(tok + plen, b64, blen + 1);
    }
    OPENSSL_cleanse(b64, blen);
    free(b64);
    return tok;
}

const char *auth_token_name_problem(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > 100)
        return "name must be 1 to 100 characters";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return "name must not contain control characters";
    return NULL;
}

const char *auth_environment_problem(const char *env)
{
    size_t n = env ? strlen(env) : 0;
    if (n < 1 || n > 63)
        return "an environment name is 1 to 63 characters";
    for (size_t i = 0; i < n; i++) {
        char c = env[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return "an environment name is lowercase letters, digits and '-'";
    }
    return NULL;
}
