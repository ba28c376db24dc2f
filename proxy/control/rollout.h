/*
 * rollout.h - canary rollouts with analysis and automatic rollback (the
 * design is in rollout.c). Control thread only.
 */
#ifndef VEER_ROLLOUT_H
#define VEER_ROLLOUT_H

struct ctl_req;
struct sbuf;

/* rollout start|status|pause|resume|abort: r is answered (maybe later). */
void rollout_command(struct ctl_req *r);
/* Every 100 ms: analysis, steps, rollbacks. */
void rollout_tick(void);
void rollout_backend_failing(int pi, uint32_t i, const char *why); /* breaker tripped */
/* The group pool pi's rollout treats as canary, or -1. */
int rollout_canary(int pi);
/* Pool pi's rollout as a state-file value (NULL when none), and back (0, or -1). */
char *rollout_render(int pi);
int rollout_restore(int pi, const char *text);
void rollout_shutdown(void);
/* Stop every preflight under way (reload, upgrade): its command is answered ERR, nothing moved. */
void rollout_stop_preflights(const char *why);
/* A pool's rollout for /status: an object with its step and verdict, or null. */
void rollout_status_json(int pool, struct sbuf *o);
/*
 * The same rollout's plan for the status page: its step shares, step interval and
 * analysis thresholds (max_error_rate a fraction, max_p99_ms, null when not checked,
 * min_requests), or null when the pool never had one.
 */
void rollout_plan_json(int pool, struct sbuf *o);

#endif
