/*
 * Row-parallel work on Linux targets: a matmul's rows split into contiguous ranges, one per thread.
 *
 * Every row is still computed by exactly one thread with exactly the arithmetic of the single-threaded
 * kernel (a range of rows is just the kernel called on offset pointers), so the results are identical
 * for any number of threads. Builds that define LLMCU_PTHREADS (hosted and Linux targets) get a small
 * persistent pool of POSIX threads; others (firmware) get the serial fallback and transformer.c calls the
 * kernels directly.
 */
#ifndef LLMCU_PARALLEL_H
#define LLMCU_PARALLEL_H

/* The pool's size limit, and the build's default thread count (the threads= option). */
#define LLMCU_MAX_THREADS 8
#ifndef LLMCU_THREADS
#define LLMCU_THREADS 1
#endif

/* Work below this many multiply-adds (rows x cols) runs on the calling thread alone: handing it out
 * would cost more than it saves. */
#define LLMCU_PARALLEL_MIN_WORK 32768L

/* Computes rows [begin, end) of some job described by ctx. */
typedef void (*llmcu_rows_fn)(void *ctx, int begin, int end);

/* Starts the pool with n threads in all, the caller included (1..LLMCU_MAX_THREADS; 1 starts none).
 * Call once, before any llmcu_parallel_rows. Returns 0, or -1 when n is out of range or a thread could
 * not be created. */
int llmcu_parallel_start(int n);

/* The number of threads llmcu_parallel_rows uses (1 until llmcu_parallel_start). */
int llmcu_parallel_threads(void);

/* Calls fn(ctx, begin, end) over disjoint ranges that cover [0, rows), one range per thread (the caller
 * takes the first), and returns when all are done. Range boundaries are multiples of 16 rows. */
void llmcu_parallel_rows(llmcu_rows_fn fn, void *ctx, int rows);

#endif /* LLMCU_PARALLEL_H */
