/*
 * Row-parallel work (parallel.h): a persistent pool of POSIX threads where the build defines
 * LLMCU_PTHREADS, a plain call everywhere else.
 *
 * The caller publishes a job (function, context, row count) by bumping a generation counter; every worker
 * computes its own fixed range of rows and counts itself out; the caller computes the first range and waits
 * until the count reaches zero. Waiting spins briefly (a matmul follows the previous one within
 * microseconds) and then sleeps on a condition variable, so idle workers cost nothing between runs.
 */
#if defined(LLMCU_PTHREADS)
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#endif

#include "parallel.h"

#if defined(LLMCU_PTHREADS)

#define ROW_ALIGN 16      /* range boundaries are multiples of this many rows */
#define SPIN_LIMIT 20000  /* polls before sleeping: some tens of microseconds */

#if defined(__aarch64__) || defined(__arm__)
#define CPU_RELAX() __asm__ volatile("yield" ::: "memory")
#elif defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __asm__ volatile("pause" ::: "memory")
#else
#define CPU_RELAX() __asm__ volatile("" ::: "memory")
#endif

static pthread_t workers[LLMCU_MAX_THREADS - 1];
static int n_threads = 1;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_posted = PTHREAD_COND_INITIALIZER;
static pthread_cond_t job_done = PTHREAD_COND_INITIALIZER;

/* The current job: written by the caller only while every worker is idle (pending == 0). */
static llmcu_rows_fn job_fn;
static void *job_ctx;
static int job_rows;

/* Read and written with the __atomic builtins: a new job is a new generation (release: the job fields
 * above are visible to whoever sees it); pending counts the workers that have not finished it. */
static unsigned generation;
static int pending;

/* First row of part `part` of `parts`; part == parts gives the end. Monotonic, so the ranges are disjoint
 * and cover [0, rows); small jobs may leave some parts empty. */
static int range_start(int rows, int part, int parts) {
    if (part >= parts) {
        return rows;
    }
    long start = (long)rows * part / parts;
    return (int)(start - start % ROW_ALIGN);
}

static unsigned wait_for_job(unsigned seen) {
    unsigned now;
    for (int spin = 0; spin < SPIN_LIMIT; spin++) {
        now = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
        if (now != seen) {
            return now;
        }
        CPU_RELAX();
    }
    pthread_mutex_lock(&lock);
    while ((now = __atomic_load_n(&generation, __ATOMIC_ACQUIRE)) == seen) {
        pthread_cond_wait(&job_posted, &lock);
    }
    pthread_mutex_unlock(&lock);
    return now;
}

static void *worker_main(void *arg) {
    int part = (int)(intptr_t)arg;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_job(seen);
        int begin = range_start(job_rows, part, n_threads);
        int end = range_start(job_rows, part + 1, n_threads);
        if (begin < end) {
            job_fn(job_ctx, begin, end);
        }
        if (__atomic_sub_fetch(&pending, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_mutex_lock(&lock);
            pthread_cond_signal(&job_done);
            pthread_mutex_unlock(&lock);
        }
    }
    return NULL;
}

int llmcu_parallel_start(int n) {
    if (n < 1 || n > LLMCU_MAX_THREADS || n_threads != 1) {
        return -1;
    }
    n_threads = n; /* before the workers start: they read it for their ranges */
    for (int i = 1; i < n; i++) {
        if (pthread_create(&workers[i - 1], NULL, worker_main, (void *)(intptr_t)i) != 0) {
            return -1; /* the caller exits: the workers already started never see a job */
        }
    }
    return 0;
}

int llmcu_parallel_threads(void) { return n_threads; }

void llmcu_parallel_rows(llmcu_rows_fn fn, void *ctx, int rows) {
    if (n_threads == 1) {
        fn(ctx, 0, rows);
        return;
    }
    job_fn = fn;
    job_ctx = ctx;
    job_rows = rows;
    __atomic_store_n(&pending, n_threads - 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&lock);
    __atomic_add_fetch(&generation, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&job_posted);
    pthread_mutex_unlock(&lock);

    int end = range_start(rows, 1, n_threads);
    if (end > 0) {
        fn(ctx, 0, end);
    }

    for (int spin = 0; spin < SPIN_LIMIT; spin++) {
        if (__atomic_load_n(&pending, __ATOMIC_ACQUIRE) == 0) {
            return;
        }
        CPU_RELAX();
    }
    pthread_mutex_lock(&lock);
    while (__atomic_load_n(&pending, __ATOMIC_ACQUIRE) != 0) {
        pthread_cond_wait(&job_done, &lock);
    }
    pthread_mutex_unlock(&lock);
}

#else /* no threads: firmware and any build without LLMCU_PTHREADS */

int llmcu_parallel_start(int n) { return n == 1 ? 0 : -1; }

int llmcu_parallel_threads(void) { return 1; }

void llmcu_parallel_rows(llmcu_rows_fn fn, void *ctx, int rows) { fn(ctx, 0, rows); }

#endif
