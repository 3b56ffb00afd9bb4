/*
 * q4z on x86: the matmul is in matmul.c, q4's AVX2 kernel with the group words; here the reference's under
 * another name (matrices it does not take) and the reference's embedding lookup, so that this file replaces
 * kernels/ref/q4z.c as a whole.
 */
#define matmul_q4z portable_matmul_q4z
#include "kernels/ref/q4z.c"
#undef matmul_q4z
