/*
 * q4z on x86: the matmul is in matmul.c, q4's AVX2 kernel with the group words; here the reference's as
 * ref_matmul_q4z (kernels/ref/ref.h: for the matrices it does not take) and the reference's embedding lookup,
 * so that this file replaces kernels/ref/q4z.c as a whole.
 */
#include "kernels/ref/ref.h"

#define matmul_q4z ref_matmul_q4z
#include "kernels/ref/q4z.c"
#undef matmul_q4z
