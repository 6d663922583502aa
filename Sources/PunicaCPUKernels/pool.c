// The CPU backend's thread pool: workers spin a while between jobs instead of sleeping at once, since a decode step
// hands them dozens of jobs of 5-100 µs each, and waking a sleeping thread costs about that much
// (DispatchQueue.concurrentPerform with two 20 µs halves took 65 µs on the 2-core development machine).
#include "PunicaCPUKernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

// One job: task(context, i) for every i < count, the indices claimed one at a time.
typedef struct {
    punica_task task;
    void *context;
    ptrdiff_t count;
    _Atomic ptrdiff_t next, done;
} job_t;

static struct {
    int threads;                     // workers + the caller
    _Atomic(job_t *) job;            // the running job, NULL between jobs
    _Atomic unsigned long generation;  // bumped when a job is published
    _Atomic int active;              // workers that may hold a pointer to the job
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    int sleepers;                    // guarded by mutex
    pthread_mutex_t caller;          // held by the thread whose job runs
} pool = {.threads = 1, .mutex = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .caller = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local int inside_task;  // nested runs (a task that runs a job) go inline

static inline void relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

// A spin that gives the core away now and then: on a loaded machine the thread being waited for may sit descheduled
// (a worker that claimed an index, say), and pure spinning would keep it off the core for a whole time slice.
static inline void spin(int *spins) {
    if (++*spins % 256 == 0) sched_yield();
    else relax();
}

static void run_indices(job_t *job) {
    inside_task = 1;
    for (;;) {
        ptrdiff_t i = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (i >= job->count) break;
        job->task(job->context, i);
        atomic_fetch_add_explicit(&job->done, 1, memory_order_release);
    }
    inside_task = 0;
}

// About a millisecond of spinning before a worker sleeps: longer than the gaps inside a step, shorter than a
// server's idle time.
#define SPINS (1 << 14)

static void *worker(void *unused) {
    (void)unused;
    unsigned long seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&pool.generation, memory_order_acquire) == seen) {
            if (spins < SPINS) {
                spin(&spins);
                continue;
            }
            pthread_mutex_lock(&pool.mutex);
            pool.sleepers++;
            while (atomic_load_explicit(&pool.generation, memory_order_acquire) == seen) pthread_cond_wait(&pool.wake, &pool.mutex);
            pool.sleepers--;
            pthread_mutex_unlock(&pool.mutex);
        }
        seen = atomic_load_explicit(&pool.generation, memory_order_acquire);
        // Announce before reading the job, so the caller, which clears it and then waits for `active` to reach 0,
        // never frees a job a worker still reads.
        atomic_fetch_add_explicit(&pool.active, 1, memory_order_seq_cst);
        job_t *job = atomic_load_explicit(&pool.job, memory_order_seq_cst);
        if (job) run_indices(job);
        atomic_fetch_sub_explicit(&pool.active, 1, memory_order_release);
    }
    return NULL;
}

void punica_pool_start(int threads) {
    if (pool.threads > 1 || threads <= 1) return;
    for (int i = 1; i < threads; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker, NULL) != 0) break;
        pthread_detach(thread);
        pool.threads++;
    }
}

void punica_pool_run(ptrdiff_t count, punica_task task, void *context) {
    if (count <= 1 || pool.threads <= 1 || inside_task || pthread_mutex_trylock(&pool.caller) != 0) {
        for (ptrdiff_t i = 0; i < count; i++) task(context, i);
        return;
    }
    job_t job = {.task = task, .context = context, .count = count};
    atomic_init(&job.next, 0);
    atomic_init(&job.done, 0);
    atomic_store_explicit(&pool.job, &job, memory_order_seq_cst);
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_mutex_lock(&pool.mutex);
    if (pool.sleepers > 0) pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mutex);
    run_indices(&job);
    int spins = 0;
    while (atomic_load_explicit(&job.done, memory_order_acquire) < count) spin(&spins);
    atomic_store_explicit(&pool.job, NULL, memory_order_seq_cst);
    while (atomic_load_explicit(&pool.active, memory_order_acquire) > 0) spin(&spins);
    pthread_mutex_unlock(&pool.caller);
}
