/* libFuzzer target: the parsing a bearer JWT meets before and after its signature check,
 * with any bytes as the token. The header (auth_jwt_head_parse: segments, base64url, JSON,
 * alg, kid, typ, crit), the claims (auth_jwt_payload_parse), the registered claim checks
 * (auth_claims_check: numbers of any size, aud as string or array) and the role mapping
 * (auth_roles_from_claims, realm and client roles of any shape). Nothing here may crash,
 * leak, read out of bounds or hit undefined behaviour; a token accepted by the header check
 * must name an allowed alg and a kid that fits its buffer.
 *
 * Built and run by the suite's fuzz runner (every tests/fuzz/fuzz_*.c with its corpus in
 * tests/fuzz/corpus/<name>/); by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -I server \
 *     $(pkg-config --cflags libpq jansson libjwt) tests/fuzz/fuzz_jwt.c \
 *     server/auth/auth_jwt.c server/platform/base64url.c server/platform/log.c \
 *     server/platform/buf.c -ljansson -ljwt -lcrypto -o /tmp/fuzz_jwt
 *   /tmp/fuzz_jwt -max_total_time=60 tests/fuzz/corpus/jwt */
#include <jwt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/auth_internal.h"
#include "platform/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int algs[] = {JWT_ALG_RS256, JWT_ALG_ES256, JWT_ALG_ES384};
    static const char *const role_names[4] = {NULL, "qdb-viewer", "qdb-operator", "qdb-admin"};
    static const char *const clients[] = {"qdb-control", "qdb-console", NULL};
    if (size > AUTH_TOKEN_MAX + 16)
        return 0;
    char *token = malloc(size + 1); /* a header value: NUL-terminated, may hold any byte */
    if (!token)
        return 0;
    memcpy(token, data, size);
    token[size] = '\0';

    struct auth_jwt_head h;
    enum auth_reason reason = AUTH_R_MISSING;
    if (auth_jwt_head_parse(token, algs, 3, &h, &reason) == 0) {
        int allowed = 0;
        for (int i = 0; i < 3; i++)
            allowed |= algs[i] == h.alg;
        if (!allowed || !h.kid[0] || strnlen(h.kid, sizeof h.kid) >= sizeof h.kid)
            abort(); /* the header check let through what it must refuse */
    } else if ((unsigned)reason >= AUTH_R__COUNT) {
        abort();
    }

    json_t *claims = NULL;
    if (auth_jwt_payload_parse(token, &claims) == 0) {
        if (!json_is_object(claims))
            abort();
        enum auth_reason why = AUTH_R_MISSING;
        auth_claims_check(claims, "http://127.0.0.1:1/realms/qdb-one", "qdb-control",
                          (time_t)1767225600, &why);
        enum http_perm role = auth_roles_from_claims(claims, role_names, clients);
        if (role < HTTP_PUBLIC || role > HTTP_ADMIN)
            abort();
        json_decref(claims);
    } else if (claims) {
        abort(); /* a refusal leaves nothing to free */
    }
    free(token);
    return 0;
}
