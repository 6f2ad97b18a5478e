/* Typed statement parameters (pure parts: no connection is needed to build them or to
 * refuse a mismatch). */
#include <string.h>

#include "platform/db.h"
#include "unit.h"

static struct db_stmt q_two = DB_STMT("unit_two", 2, "SELECT $1, $2");

int main(void)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, INT64_MIN);
    db_param_int(&p, 42);
    db_param_bool(&p, 1);
    db_param_text(&p, NULL);
    db_param_int_or_null(&p, 7, 1);
    db_param_int_or_null(&p, 7, 0);
    json_t *j = json_pack("{s:i,s:s}", "b", 2, "a", "x");
    db_param_json(&p, j);
    json_decref(j);
    EXPECT(p.n == 7, "seven values: %d", p.n);
    EXPECT(strcmp(p.values[0], "-9223372036854775808") == 0, "int64 min: %s", p.values[0]);
    EXPECT(strcmp(p.values[1], "42") == 0 && strcmp(p.values[2], "true") == 0, "int, bool");
    EXPECT(!p.values[3] && !p.values[4] && strcmp(p.values[5], "7") == 0, "NULLs and 7");
    EXPECT(strcmp(p.values[6], "{\"a\":\"x\",\"b\":2}") == 0, "JSON compact, keys sorted: %s",
           p.values[6]);
    /* the statement takes 2: refused without touching the (absent) connection, and freed */
    EXPECT(db_execp(NULL, &q_two, &p, NULL) == DB_HARD, "count mismatch refused");
    EXPECT(!p.owned[6], "the JSON text was freed");

    struct db_params many = DB_PARAMS_INIT;
    for (int i = 0; i < DB_MAX_PARAMS + 1; i++)
        db_param_int(&many, i);
    EXPECT(many.invalid && many.n == DB_MAX_PARAMS, "past the maximum marks it invalid");
    EXPECT(db_execp(NULL, &q_two, &many, NULL) == DB_HARD, "and it is refused");
    return unit_done();
}
