/*
 * mirrorctl.c - `mirror POOL on [group=G] [percent=X]` and `mirror POOL
 * off` (issue 19): one change on the control path like any other, audited
 * before it is made, written into the model, published with one atomic
 * store, kept in the state file, then acknowledged with OK gen=N
 * applied_us=T. The rollout's shadow phase sets the same switch
 * (ctl_mirror_set).
 *
 * In fleet mode the switch is this instance's: shadow traffic is an
 * observation each instance makes of its own share of the requests.
 */
#include "control-i.h"
#include "state.h"
#include "veer.h"

#include <stdio.h>
#include <string.h>

void ctl_mirror_json(char *buf, size_t len, const struct rt_pool *p)
{
    const char *group;
    double percent;

    if (model_mirror(p, &group, &percent))
        snprintf(buf, len, "{\"pool\":\"%s\",\"mirror\":true,\"group\":\"%s\",\"percent\":%g}",
                 p->name, group, percent);
    else
        snprintf(buf, len, "{\"pool\":\"%s\",\"mirror\":false}", p->name);
}

void ctl_mirror_set(struct rt_pool *p, bool on, const char *group, double percent)
{
    free(p->mirror_group);
    p->mirror_group = NULL;
    p->mirror_percent = 0;
    if (!on) {
        p->mirror = MIRROR_OFF;
        return;
    }
    p->mirror = MIRROR_ON;
    p->mirror_group = veer_strdup(group);
    p->mirror_percent = percent;
}

void ctl_mirror(struct ctl_req *r)
{
    const struct cmd *c = &r->cmd;
    const struct conf_mirror *cm;
    struct rt_pool *p;
    const char *group;
    double percent;
    char before[512], after[512];
    uint64_t gen;
    int pi;

    if ((pi = ctl_find_pool(r)) < 0)
        return;
    p = &ctl.model->pools[pi];
    cm = p->conf->has_mirror ? &p->conf->mirror : NULL;
    group = c->group[0] ? c->group : cm ? cm->group : NULL;
    percent = c->percent >= 0 ? c->percent : cm ? cm->percent : 100;
    if (c->on && group == NULL) {
        ctl_refuse(r, "pool %s has no mirror group: give group=G", p->name);
        return;
    }
    if (c->on && model_find_group(p, group) < 0) {
        ctl_refuse(r, "unknown group %s in pool %s", group, p->name);
        return;
    }
    ctl_mirror_json(before, sizeof(before), p);
    if (c->on)
        snprintf(after, sizeof(after),
                 "{\"pool\":\"%s\",\"mirror\":true,\"group\":\"%s\",\"percent\":%g}", p->name,
                 group, percent);
    else
        snprintf(after, sizeof(after), "{\"pool\":\"%s\",\"mirror\":false}", p->name);
    if (ctl_audit_change(r, ctl.model->generation + 1, before, after) < 0)
        return;
    ctl_mirror_set(p, c->on, group, percent);
    gen = control_publish();
    control_save_state();
    if (c->on)
        log_info("mirror on for %s: %g%% to %s (gen %llu)", p->name, percent, group,
                 (unsigned long long)gen);
    else
        log_info("mirror off for %s (gen %llu)", p->name, (unsigned long long)gen);
    ctl_reply_change(r, gen, NULL);
}
