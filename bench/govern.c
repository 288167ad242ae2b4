/* govern.c: the governance decision on its own: one request's rate limits (key RPM + TPM, model RPM) and budget
 * reservation (key USD per day + team tokens per month) at admit, then their settle, in a tight loop on 1 and 2
 * threads. Prints CPU ns per decision (admit + settle, both modules; thread CPU time, since a shared machine makes
 * wall time lie) and wall ns. Goal (issue 8): under 1 us.
 *
 *   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DAGENTD_TESTS=OFF && cmake --build build -j2
 *   cc -O2 -Isrc -o /tmp/govern bench/govern.c build/libagentd_core.a -lpthread -lm && /tmp/govern
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "policy/budget.h"
#include "policy/ratelimit.h"

static struct budget *B;
static struct ratelimit *R;
static const struct price P = {.name = "p", .input = 0.15, .output = 0.6, .cached_input = 0.075, .cache_write = 0.15,
                               .reasoning = 0.6};
#define N 2000000L
static double cpu_ns[2]; /* per thread: CPU time of its loop (the machine may be shared: wall time lies) */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *loop(void *arg)
{
    const char *key = arg;
    struct rl_limit rl[2] = {{.scope = RL_KEY, .name = key, .rpm = 1000000000, .tpm = 1000000000000LL},
                             {.scope = RL_MODEL, .name = "gpt-4o-mini", .rpm = 1000000000}};
    struct budget_limit bl[2] = {
        {.scope = BUDGET_KEY, .name = key, .window = BUDGET_DAY, .usd_nusd = (int64_t)1e18},
        {.scope = BUDGET_TEAM, .name = "team-a", .window = BUDGET_MONTH, .tokens = (int64_t)1e18}};
    struct budget_ask a = {.price = &P, .input_tokens = 250, .max_tokens = 500, .now = 1796385600};
    struct price_tokens used = {.input = 240, .output = 120};
    long refused = 0;
    for (long i = 0; i < N; i++) {
        struct rl_hold rh;
        struct rl_decision rd;
        struct budget_hold bh;
        struct budget_decision bd;
        rl_admit(R, rl, 2, 750, i / 1000, &rh, &rd);
        budget_reserve(B, bl, 2, &a, &bh, &bd);
        refused += !rd.allowed || bd.verdict != BUDGET_OK;
        budget_settle(B, &bh, &used, NULL, a.now);
        rl_settle(R, &rh, 360);
    }
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    cpu_ns[key[19] - '1'] = (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
    return (void *)refused;
}

int main(void)
{
    B = budget_new();
    R = rl_new();
    for (int threads = 1; threads <= 2; threads++) {
        pthread_t t[2];
        static const char *const keys[] = {"key_0000000000000001", "key_0000000000000002"};
        double t0 = now_s();
        for (int i = 0; i < threads; i++)
            pthread_create(&t[i], NULL, loop, (void *)keys[i]);
        long refused = 0;
        for (int i = 0; i < threads; i++) {
            void *r;
            pthread_join(t[i], &r);
            refused += (long)r;
        }
        double dt = now_s() - t0;
        double cpu = 0;
        for (int i = 0; i < threads; i++)
            cpu += cpu_ns[i];
        printf("threads=%d decisions=%ld cpu_ns/decision=%.1f wall_ns/decision/thread=%.1f refused=%ld\n", threads,
               N * threads, cpu / (double)(N * threads), dt * 1e9 / (double)N, refused);
    }
    budget_free(B);
    rl_free(R);
    return 0;
}
