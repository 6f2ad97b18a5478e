# Writes OUT: a C file defining `const char SYMBOL[]` (NUL-terminated) and
# `const size_t SYMBOL_len` with the bytes of IN.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUT}.tmp" "/* Generated from ${IN}; do not edit. */\n#include <stddef.h>\n"
     "const char ${SYMBOL}[] = {${bytes}0x00};\nconst size_t ${SYMBOL}_len = ${len};\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
