/* macros.h: tiny language helpers shared by every module. */
#ifndef AGENTD_MACROS_H
#define AGENTD_MACROS_H

/* Number of elements of an array. Refuses to compile when given a pointer (which would silently divide the
 * size of the pointer): the bit-field width is negative exactly when `a` and `&a[0]` have the same type. */
#define ARRAY_LEN(a)                                                                                               \
    (sizeof(a) / sizeof((a)[0]) +                                                                                  \
     0 * sizeof(struct { int array_len_needs_an_array : 1 - 2 * __builtin_types_compatible_p(__typeof__(a),       \
                                                                                              __typeof__(&(a)[0])); }))

#endif
