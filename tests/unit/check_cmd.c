/*
 * check_cmd.c - the admin command parser: a table of good lines with every
 * parsed field checked, a table of bad lines with the reason expected,
 * durations, help, kind names, small error buffers, and 100k random lines
 * that must never crash the parser or leave err unterminated.
 */
#include "cmd.h"

#define CMD_LAST CMD_MIRROR_REPORT

#include <check.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const char *const state_names[] = {"ready", "drain", "maint"};

/* Append printf output to buf (size n), for render(). */
__attribute__((format(printf, 3, 4))) static void add(char *buf, size_t n, const char *fmt, ...)
{
    size_t len = strlen(buf);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf + len, n - len, fmt, ap);
    va_end(ap);
}

/*
 * Every field of c that differs from its "not given" value, in a fixed
 * order, as "key=value" words: comparing renderings checks all fields at
 * once, including that the ones a command does not set keep their defaults.
 */
static void render(const struct cmd *c, char *buf, size_t n)
{
    buf[0] = '\0';
    add(buf, n, "kind=%s", cmd_kind_name(c->kind));
    if (c->is_change)
        add(buf, n, " change");
    if (c->pool[0])
        add(buf, n, " pool=%s", c->pool);
    if (c->route[0])
        add(buf, n, " route=%s", c->route);
    if (c->backend[0])
        add(buf, n, " backend=%s", c->backend);
    if (c->backend2[0])
        add(buf, n, " backend2=%s", c->backend2);
    if (c->addr[0])
        add(buf, n, " addr=%s", c->addr);
    if (c->group[0])
        add(buf, n, " group=%s", c->group);
    if (c->weight != -1)
        add(buf, n, " weight=%d", c->weight);
    if (c->kind == CMD_SET_STATE || c->state != CMD_STATE_READY)
        add(buf, n, " state=%s", state_names[c->state]);
    for (int i = 0; i < c->nshares; i++)
        add(buf, n, "%s%s:%d", i ? "," : " shares=", c->shares[i].group, c->shares[i].share);
    if (c->json)
        add(buf, n, " json");
    if (c->force)
        add(buf, n, " force");
    if (c->wait)
        add(buf, n, " wait");
    if (c->timeout_ms != -1)
        add(buf, n, " timeout=%lld", (long long)c->timeout_ms);
    if (c->on)
        add(buf, n, " on");
    if (c->retry_after != -1)
        add(buf, n, " retry_after=%d", c->retry_after);
    if (c->hold_ms != -1)
        add(buf, n, " hold=%lld", (long long)c->hold_ms);
    if (c->canary[0])
        add(buf, n, " canary=%s", c->canary);
    for (int i = 0; i < c->nsteps; i++)
        add(buf, n, "%s%d", i ? "," : " steps=", c->steps[i]);
    if (c->interval_ms != 0)
        add(buf, n, " interval=%lld", (long long)c->interval_ms);
    if (c->max_error_rate != -1)
        add(buf, n, " max_error_rate=%g", c->max_error_rate);
    if (c->max_p99_ms != -1)
        add(buf, n, " max_p99=%lld", (long long)c->max_p99_ms);
    if (c->min_requests != -1)
        add(buf, n, " min_requests=%d", c->min_requests);
    if (c->preflight[0])
        add(buf, n, " preflight=%s", c->preflight);
    if (c->shadow_ms != -1)
        add(buf, n, " shadow=%lld", (long long)c->shadow_ms);
    if (c->shadow_percent != -1)
        add(buf, n, " shadow_percent=%g", c->shadow_percent);
    if (c->max_diff_rate != -1)
        add(buf, n, " max_diff_rate=%g", c->max_diff_rate);
    if (c->percent != -1)
        add(buf, n, " percent=%g", c->percent);
    if (c->file[0])
        add(buf, n, " file=%s", c->file);
    if (c->kind == CMD_ROUTE_EXPLAIN) {
        add(buf, n, " method=%s host=%s path=%s", c->x.buf + c->x.method,
            c->x.has_host ? c->x.buf + c->x.host : "(none)", c->x.buf + c->x.path);
        if (c->x.buf[c->x.query])
            add(buf, n, " query=%s", c->x.buf + c->x.query);
        for (int i = 0; i < c->x.nheaders; i++)
            add(buf, n, " hdr[%s]=[%s]", c->x.buf + c->x.hname[i], c->x.buf + c->x.hvalue[i]);
    }
}

/* 63 and 64 bytes: the longest name and one byte too many. */
#define N63 "abcdefghij0123456789ABCDEFGHIJ.-_abcdefghij0123456789ABCDEFGHIJ"
#define N64 N63 "x"

static const struct good {
    const char *line;
    const char *want;
} good[] = {
    {"help", "kind=help"},
    {"  help  ", "kind=help"},
    {"help\r", "kind=help"},
    {"show pools", "kind=show pools"},
    {"show pools --json", "kind=show pools json"},
    {"show pool api", "kind=show pool pool=api"},
    {"show pool api --json", "kind=show pool pool=api json"},
    {"\tshow\tpool\tapi\t--json\r", "kind=show pool pool=api json"},
    {"show cluster", "kind=show cluster"},
    {"show cluster --json", "kind=show cluster json"},
    {"set weight api/green-1 10", "kind=set weight change pool=api backend=green-1 weight=10"},
    {"set weight api/b 0", "kind=set weight change pool=api backend=b weight=0"},
    {"set weight api/b 1000", "kind=set weight change pool=api backend=b weight=1000"},
    {"set weight api/b 0007", "kind=set weight change pool=api backend=b weight=7"},
    {"set weight api/b 5 --force", "kind=set weight change pool=api backend=b weight=5 force"},
    {"set weight " N63 "/" N63 " 1",
     "kind=set weight change pool=" N63 " backend=" N63 " weight=1"},
    {"set weight a.b_c-d/E.F_9 1", "kind=set weight change pool=a.b_c-d backend=E.F_9 weight=1"},
    {"set state api/b ready", "kind=set state change pool=api backend=b state=ready"},
    {"set state api/b drain", "kind=set state change pool=api backend=b state=drain"},
    {"set state api/b maint --force", "kind=set state change pool=api backend=b state=maint force"},
    {"shift api blue=90 green=10", "kind=shift change pool=api shares=blue:90,green:10"},
    {"shift api blue=0 green=100", "kind=shift change pool=api shares=blue:0,green:100"},
    {"shift api green=100", "kind=shift change pool=api shares=green:100"},
    {"shift api blue=60 green=60", "kind=shift change pool=api shares=blue:60,green:60"},
    {"shift api --force a=1 b=2 c=97", "kind=shift change pool=api shares=a:1,b:2,c:97 force"},
    {"swap api", "kind=swap change pool=api"},
    {"swap api --force", "kind=swap change pool=api force"},
    {"rollback api", "kind=rollback change pool=api"},
    {"rollback api --force", "kind=rollback change pool=api force"},
    {"rollback route payments", "kind=rollback change route=payments"},
    {"rollback route", "kind=rollback change pool=route"}, /* a pool named "route" */
    {"show routes", "kind=show routes"},
    {"show routes --json", "kind=show routes json"},
    {"route maintenance payments on", "kind=route maintenance change route=payments on"},
    {"route maintenance payments off", "kind=route maintenance change route=payments"},
    {"route maintenance payments on --retry-after 60 --hold 2s",
     "kind=route maintenance change route=payments on retry_after=60 hold=2000"},
    {"route set payments pool payments-v2",
     "kind=route set change pool=payments-v2 route=payments"},
    {"add backend api green-2 127.0.0.1:9003",
     "kind=add backend change pool=api backend=green-2 addr=127.0.0.1:9003"},
    {"add backend api green-2 127.0.0.1:9003 weight 100 group green",
     "kind=add backend change pool=api backend=green-2 addr=127.0.0.1:9003 group=green "
     "weight=100"},
    {"add backend api g 127.0.0.1:1 group green weight 0 ",
     "kind=add backend change pool=api backend=g addr=127.0.0.1:1 group=green weight=0"},
    {"add backend api g [::1]:65535",
     "kind=add backend change pool=api backend=g addr=[::1]:65535"},
    {"add backend api g localhost:80 weight 1000",
     "kind=add backend change pool=api backend=g addr=localhost:80 weight=1000"},
    {"add backend api g [2001:db8::42]:8080",
     "kind=add backend change pool=api backend=g addr=[2001:db8::42]:8080"},
    {"del backend api green-2", "kind=del backend change pool=api backend=green-2"},
    {"del backend api green-2 --force", "kind=del backend change pool=api backend=green-2 force"},
    {"drain api/blue-1", "kind=drain change pool=api backend=blue-1"},
    /* Discovered backends are "<entry>-<address>": ':', '[' and ']' in backend names. */
    {"drain api/api-127.0.0.2:8080", "kind=drain change pool=api backend=api-127.0.0.2:8080"},
    {"set state api/api-[::1]:8080 maint",
     "kind=set state change pool=api backend=api-[::1]:8080 state=maint"},
    {"del backend api api-10.0.0.7:80", "kind=del backend change pool=api backend=api-10.0.0.7:80"},
    {"show discovery", "kind=show discovery"},
    {"show discovery --json", "kind=show discovery json"},
    {"drain api/blue-1 --wait --timeout 30s --force",
     "kind=drain change pool=api backend=blue-1 force wait timeout=30000"},
    {"drain --timeout 250ms api/b", "kind=drain change pool=api backend=b timeout=250"},
    {"drain api/b --timeout 2m", "kind=drain change pool=api backend=b timeout=120000"},
    {"drain api/b --timeout 5", "kind=drain change pool=api backend=b timeout=5000"},
    {"replace api blue-1 blue-9 127.0.0.1:9011",
     "kind=replace change pool=api backend=blue-1 backend2=blue-9 addr=127.0.0.1:9011"},
    {"replace api a b [::1]:9 --timeout 1m",
     "kind=replace change pool=api backend=a backend2=b addr=[::1]:9 timeout=60000"},
    {"maintenance on", "kind=maintenance change on"},
    {"maintenance off", "kind=maintenance change"},
    {"maintenance on api", "kind=maintenance change pool=api on"},
    {"maintenance on api --retry-after 30 --hold 5s",
     "kind=maintenance change pool=api on retry_after=30 hold=5000"},
    {"maintenance on --retry-after 0", "kind=maintenance change on retry_after=0"},
    {"maintenance on --retry-after 86400", "kind=maintenance change on retry_after=86400"},
    {"maintenance off api --hold 1ms", "kind=maintenance change pool=api hold=1"},
    {"rollout start api canary=green steps=1,5,20,100 interval=30s",
     "kind=rollout start change pool=api canary=green steps=1,5,20,100 interval=30000"},
    {"rollout start api interval=10s steps=100 canary=green max-error-rate=5% max-p99=500ms "
     "min-requests=50",
     "kind=rollout start change pool=api canary=green steps=100 interval=10000 "
     "max_error_rate=5 max_p99=500 min_requests=50"},
    {"rollout start api canary=green preflight=smoke steps=1,100 interval=5s",
     "kind=rollout start change pool=api canary=green steps=1,100 interval=5000 preflight=smoke"},
    {"rollout start api canary=green shadow=60s max-diff-rate=1% shadow-percent=10 steps=1,100 "
     "interval=5s",
     "kind=rollout start change pool=api canary=green steps=1,100 interval=5000 shadow=60000 "
     "shadow_percent=10 max_diff_rate=1"},
    {"mirror api on group=green percent=10.5",
     "kind=mirror change pool=api group=green on percent=10.5"},
    {"mirror api on", "kind=mirror change pool=api on"},
    {"mirror api off", "kind=mirror change pool=api"},
    {"mirror report api --json", "kind=mirror report pool=api json"},
    {"mirror report api", "kind=mirror report pool=api"},
    {"rollout start api canary=g steps=1 interval=1 max-error-rate=0.5",
     "kind=rollout start change pool=api canary=g steps=1 interval=1000 max_error_rate=0.5"},
    {"rollout start api canary=g steps=1,2 interval=1m max-error-rate=0 min-requests=1",
     "kind=rollout start change pool=api canary=g steps=1,2 interval=60000 max_error_rate=0 "
     "min_requests=1"},
    {"rollout start api canary=g steps=99,100 interval=1s max-error-rate=100%",
     "kind=rollout start change pool=api canary=g steps=99,100 interval=1000 "
     "max_error_rate=100"},
    {"rollout start api canary=g steps=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,"
     "22,23,24,25,26,27,28,29,30,31,32 interval=1s",
     "kind=rollout start change pool=api canary=g steps=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,"
     "16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32 interval=1000"},
    {"rollout status api", "kind=rollout status pool=api"},
    {"rollout status api --json", "kind=rollout status pool=api json"},
    {"rollout pause api", "kind=rollout pause change pool=api"},
    {"rollout resume api", "kind=rollout resume change pool=api"},
    {"rollout abort api", "kind=rollout abort change pool=api"},
    {"audit verify", "kind=audit verify"},
    {"audit verify /var/log/veer/audit.log", "kind=audit verify file=/var/log/veer/audit.log"},
    {"reload", "kind=reload change"},
    {"upgrade\r", "kind=upgrade change"},
    {"route explain GET api.example.com /payments/x",
     "kind=route explain method=GET host=api.example.com path=/payments/x"},
    {"route explain POST - /a/../b?x=1&y=/z",
     "kind=route explain method=POST host=(none) path=/a/../b query=?x=1&y=/z"},
    {"route explain GET h:8080 /users X-Api-Version:2 X-Empty: X-Url:http://a:1/",
     "kind=route explain method=GET host=h:8080 path=/users hdr[X-Api-Version]=[2] hdr[X-Empty]=[] "
     "hdr[X-Url]=[http://a:1/]"},
    {"route explain GET h /%2F?", "kind=route explain method=GET host=h path=/%2F query=?"},
};

START_TEST(test_good_lines_parse_to_the_expected_fields)
{
    const struct good *g = &good[_i];
    char err[256], got[2048];
    struct cmd c;

    memset(err, 'X', sizeof(err));
    ck_assert_msg(cmd_parse(g->line, &c, err, sizeof(err)) == 0, "'%s' refused: %s", g->line, err);
    ck_assert_str_eq(err, "");
    render(&c, got, sizeof(got));
    ck_assert_msg(strcmp(got, g->want) == 0, "'%s'\n got:  %s\n want: %s", g->line, got, g->want);
}
END_TEST

static const struct bad {
    const char *line;
    const char *want; /* a substring of the error */
} bad[] = {
    {"", "empty command"},
    {"   \t  ", "empty command"},
    {"\r", "empty command"},
    {"foo", "unknown command 'foo' (try help)"},
    {"SHOW pools", "unknown command 'SHOW' (try help)"},
    {"show", "usage: show pools [--json] | show pool POOL [--json] | show cluster [--json]"},
    {"show foo", "unknown command 'show foo' (try help)"},
    {"set", "usage: set weight POOL/BACKEND WEIGHT"},
    {"rollout", "usage: rollout start POOL"},
    {"rollout go api", "unknown command 'rollout go' (try help)"},
    {"\x01\x02\x7f\xff", "unknown command '\?\?\?\?' (try help)"},
    {"--json show pools", "unknown command '--json'"},
    {"show --json pool api", "unknown command 'show --json' (try help)"},
    {"help me", "usage: help"},
    {"show pools extra", "usage: show pools"},
    {"show pool", "usage: show pool POOL"},
    {"show pool a b", "usage: show pool POOL"},
    {"show pool a!", "bad name 'a!' (pool names use A-Z a-z 0-9 . _ -)"},
    {"show pool a:b", "bad name 'a:b' (pool names use A-Z a-z 0-9 . _ -)"},
    {"drain a:b/c", "bad name 'a:b' (pool names use A-Z a-z 0-9 . _ -)"},
    {"set weight api/b! 1", "bad name 'b!' (backend names use A-Z a-z 0-9 . _ - : [ ])"},
    {"show pool " N64, "pool names are at most 63 bytes (got 64)"},
    {"show pool api --force", "option --force is not valid for show pool"},
    {"show pool api --json --json", "option --json given twice"},
    {"show pool api --jsn", "unknown option --jsn"},
    {"show pool api --", "unknown option --"},
    {"show cluster --wait", "option --wait is not valid for show cluster"},
    {"set weight api/b", "usage: set weight POOL/BACKEND WEIGHT"},
    {"set weight api/b 1 2", "usage: set weight POOL/BACKEND WEIGHT"},
    {"set weight api/b 1001", "weight must be 0..1000 (got 1001)"},
    {"set weight api/b 99999999999999999999999", "weight must be 0..1000 (got 9999999"},
    {"set weight api/b 10x", "bad weight '10x'"},
    {"set weight api/b -1", "bad weight '-1'"},
    {"set weight api/b +1", "bad weight '+1'"},
    {"set weight api/b 0x10", "bad weight '0x10'"},
    {"set weight api/b 1.5", "bad weight '1.5'"},
    {"set weight api 10", "bad backend 'api': expected POOL/BACKEND"},
    {"set weight /b 10", "bad backend '/b'"},
    {"set weight api/ 10", "bad backend 'api/'"},
    {"set weight a/b/c 10", "bad backend 'a/b/c'"},
    {"set weight a$/b 10", "bad name 'a$' (pool names"},
    {"set weight a/b\x01 10", "bad name 'b?' (backend names"},
    {"set weight " N64 "/b 1", "pool names are at most 63 bytes"},
    {"set weight a/" N64 " 1", "backend names are at most 63 bytes"},
    {"set weight api/b 10 --json", "option --json is not valid for set weight"},
    {"set weight api/b 10 --wait", "option --wait is not valid for set weight"},
    {"set state api/b up", "state must be ready, drain or maint (got 'up')"},
    {"set state api/b READY", "state must be ready, drain or maint (got 'READY')"},
    {"set state api/b", "usage: set state POOL/BACKEND ready|drain|maint"},
    {"set state api/b drain --timeout 5s", "option --timeout is not valid for set state"},
    {"shift api", "usage: shift POOL GROUP=PERCENT"},
    {"shift api blue=x", "bad share 'blue=x': expected GROUP=PERCENT"},
    {"shift api blue", "bad share 'blue': expected GROUP=PERCENT"},
    {"shift api =5", "bad share '=5'"},
    {"shift api blue=", "bad share 'blue='"},
    {"shift api blue=-1", "bad share 'blue=-1'"},
    {"shift api blue=50%", "bad share 'blue=50%'"},
    {"shift api blue=101", "share for 'blue' must be 0..100 (got 101)"},
    {"shift api blue=50 blue=50", "group 'blue' named twice"},
    {"shift api b!ue=50", "bad name 'b!ue' (group names"},
    {"shift api " N64 "=1", "group names are at most 63 bytes"},
    {"shift api a=1 --json", "option --json is not valid for shift"},
    {"shift api a=0 b=0 c=0 d=0 e=0 f=0 g=0 h=0 i=0 j=0 k=0 l=0 m=0 n=0 o=0 p=0 q=0 r=0 s=0 "
     "t=0 u=0 v=0 w=0 x=0 y=0 z=0 A=0 B=0 C=0 D=0 E=0 F=0 G=100",
     "too many groups (max 32)"},
    {"swap", "usage: swap POOL"},
    {"swap api green", "usage: swap POOL"},
    {"swap api --force --force", "option --force given twice"},
    {"rollback", "usage: rollback POOL"},
    {"rollback api --wait", "option --wait is not valid for rollback"},
    {"add backend api g", "usage: add backend POOL NAME ADDR [weight W] [group G]"},
    {"add backend api g 127.0.0.1:80 weight", "usage: add backend"},
    {"add backend api g 127.0.0.1:80 colour red", "usage: add backend"},
    {"add backend api g 127.0.0.1:80 weight 1001", "weight must be 0..1000 (got 1001)"},
    {"add backend api g 127.0.0.1:80 weight 1 weight 2", "weight given twice"},
    {"add backend api g 127.0.0.1:80 group a group b", "group given twice"},
    {"add backend api g 127.0.0.1:80 group a/b", "bad name 'a/b' (group names"},
    {"add backend api g 127.0.0.1:0", "port must be 1..65535 (got 0)"},
    {"add backend api g 127.0.0.1:65536", "port must be 1..65535 (got 65536)"},
    {"add backend api g 127.0.0.1:", "bad port '' in address '127.0.0.1:'"},
    {"add backend api g 127.0.0.1:http", "bad port 'http'"},
    {"add backend api g 127.0.0.1", "bad address '127.0.0.1': expected HOST:PORT"},
    {"add backend api g 127.0.0.256:80", "expected a numeric host or localhost"},
    {"add backend api g 127.1:80", "expected a numeric host or localhost"},
    {"add backend api g example.com:80", "expected a numeric host or localhost"},
    {"add backend api g :80", "expected a numeric host or localhost"},
    {"add backend api g ::1:80", "an IPv6 address goes in brackets"},
    {"add backend api g [::1]80", "expected [IPV6]:PORT"},
    {"add backend api g [::1:80", "expected [IPV6]:PORT"},
    {"add backend api g [127.0.0.1]:80", "expected a numeric host or localhost"},
    {"add backend api g []:80", "expected a numeric host or localhost"},
    {"add backend api g [::1]:0", "port must be 1..65535 (got 0)"},
    {"add backend api g 1.2.3.4:" N64, "bad port 'abcdefghij"},
    {"add backend api g 1.2.3.4:" N64 N64, "bad address '1.2.3.4:abcdefghij"},
    {"add backend api g 1.2.3.4:" N64 N64, "longer than 79 bytes"},
    {"add backend api g 127.0.0.1:80 --force", "option --force is not valid for add backend"},
    {"del backend api", "usage: del backend POOL NAME"},
    {"del backend api g --json", "option --json is not valid for del backend"},
    {"del backend api a/b", "bad name 'a/b' (backend names"},
    {"drain api", "bad backend 'api': expected POOL/BACKEND"},
    {"drain", "usage: drain POOL/BACKEND [--wait] [--timeout T] [--force]"},
    {"drain api/b --timeout", "option --timeout needs a value"},
    {"drain api/b --timeout --wait", "option --timeout needs a value"},
    {"drain api/b --timeout 5x", "bad duration '5x' for --timeout"},
    {"drain api/b --timeout 0", "bad duration '0' for --timeout"},
    {"drain api/b --timeout 0ms", "bad duration '0ms'"},
    {"drain api/b --timeout -5s", "bad duration '-5s'"},
    {"drain api/b --timeout 99999999999999999999s", "bad duration '99999999999999999999s'"},
    {"drain api/b --timeout=30s", "option --timeout takes its value as the next word"},
    {"drain api/b --timeout 1s --timeout 2s", "option --timeout given twice"},
    {"drain api/b --wait --wait", "option --wait given twice"},
    {"drain api/b --json", "option --json is not valid for drain"},
    {"drain api/b --hold 5s", "option --hold is not valid for drain"},
    {"replace api a b", "usage: replace POOL OLD NEWNAME NEWADDR"},
    {"replace api a a 127.0.0.1:80", "the new backend needs a name other than 'a'"},
    {"replace api a b 127.0.0.1:99999", "port must be 1..65535 (got 99999)"},
    {"replace api a b 127.0.0.1:80 --wait", "option --wait is not valid for replace"},
    {"replace api a b 127.0.0.1:80 --force", "option --force is not valid for replace"},
    {"maintenance", "usage: maintenance on|off [POOL]"},
    {"maintenance maybe", "maintenance takes on or off (got 'maybe')"},
    {"maintenance on api extra", "usage: maintenance"},
    {"maintenance on --retry-after 86401", "--retry-after must be 0..86400 (got 86401)"},
    {"maintenance on --retry-after 30s", "bad --retry-after '30s'"},
    {"maintenance on --retry-after", "option --retry-after needs a value"},
    {"maintenance on --hold 5x", "bad duration '5x' for --hold"},
    {"maintenance on --hold 1s --hold 2s", "option --hold given twice"},
    {"maintenance on --force", "option --force is not valid for maintenance"},
    {"rollout start", "usage: rollout start POOL canary=GROUP"},
    {"rollout start api steps=1 interval=1s", "rollout start needs canary="},
    {"rollout start api canary=g interval=1s", "rollout start needs steps="},
    {"rollout start api canary=g steps=1", "rollout start needs interval="},
    {"rollout start api canary=g steps=1 interval=1s speed=2", "unknown rollout key 'speed'"},
    {"rollout start api canary=g steps=1 interval=1s preflight=a!b",
     "bad name 'a!b' (preflight names use A-Z a-z 0-9 . _ -)"},
    {"rollout start api canary=g steps=1 interval=1s preflight=a preflight=b",
     "preflight given twice"},
    {"rollout start api canary=g steps=1 interval=1s fast", "bad argument 'fast'"},
    {"rollout start api canary=g steps=1 interval=1s max-diff-rate=101", "max-diff-rate must be"},
    {"rollout start api canary=g steps=1 interval=1s shadow=1x", "bad duration '1x' for shadow"},
    {"rollout start api canary=g steps=1 interval=1s max-diff-rate=2%",
     "max-diff-rate needs shadow=T"},
    {"rollout start api canary=g steps=1 interval=1s shadow-percent=5",
     "shadow-percent needs shadow=T"},
    {"mirror api", "usage: mirror POOL on"},
    {"mirror api maybe", "mirror takes on or off (got 'maybe')"},
    {"mirror api off group=g", "usage: mirror POOL on"},
    {"mirror api on group=g group=h", "bad argument 'group=h'"},
    {"mirror api on percent=101", "percent must be between 0 and 100 (got 101)"},
    {"mirror api on percent=x", "bad percent 'x'"},
    {"mirror api on weight=1", "bad argument 'weight=1'"},
    {"mirror a!b off", "bad name 'a!b'"},
    {"mirror report", "usage: mirror report POOL"},
    {"mirror report api --force", "option --force is not valid for mirror report"},
    {"rollout start api canary=g steps=1 interval=1s =5", "bad argument '=5'"},
    {"rollout start api canary=g canary=h steps=1 interval=1s", "canary given twice"},
    {"rollout start api canary= steps=1 interval=1s", "bad name '': group name is empty"},
    {"rollout start api canary=a/b steps=1 interval=1s", "bad name 'a/b'"},
    {"rollout start api canary=g steps=0,5 interval=1s", "step must be 1..100 (got 0)"},
    {"rollout start api canary=g steps=5,101 interval=1s", "step must be 1..100 (got 101)"},
    {"rollout start api canary=g steps=5,5 interval=1s", "steps must increase strictly"},
    {"rollout start api canary=g steps=20,5 interval=1s", "(got 5 after 20)"},
    {"rollout start api canary=g steps=1,,5 interval=1s", "bad steps '1,,5'"},
    {"rollout start api canary=g steps=1,5, interval=1s", "bad steps '1,5,'"},
    {"rollout start api canary=g steps= interval=1s", "bad steps ''"},
    {"rollout start api canary=g steps=5% interval=1s", "bad steps '5%'"},
    {"rollout start api canary=g steps=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,"
     "22,23,24,25,26,27,28,29,30,31,32,33 interval=1s",
     "too many steps (max 32)"},
    {"rollout start api canary=g steps=1 interval=0s", "bad duration '0s' for interval"},
    {"rollout start api canary=g steps=1 interval=fast", "bad duration 'fast' for interval"},
    {"rollout start api canary=g steps=1 interval=1s max-error-rate=101",
     "max-error-rate must be 0..100 (got 101)"},
    {"rollout start api canary=g steps=1 interval=1s max-error-rate=100.5%",
     "max-error-rate must be 0..100"},
    {"rollout start api canary=g steps=1 interval=1s max-error-rate=5%%", "bad max-error-rate"},
    {"rollout start api canary=g steps=1 interval=1s max-error-rate=.5", "bad max-error-rate"},
    {"rollout start api canary=g steps=1 interval=1s max-error-rate=5.", "bad max-error-rate"},
    {"rollout start api canary=g steps=1 interval=1s max-error-rate=nan", "bad max-error-rate"},
    {"rollout start api canary=g steps=1 interval=1s max-error-rate=1e1", "bad max-error-rate"},
    {"rollout start api canary=g steps=1 interval=1s max-p99=fast",
     "bad duration 'fast' for max-p99"},
    {"rollout start api canary=g steps=1 interval=1s min-requests=0",
     "min-requests must be 1..2147483647 (got 0)"},
    {"rollout start api canary=g steps=1 interval=1s min-requests=2147483648",
     "min-requests must be 1..2147483647"},
    {"rollout start api canary=g steps=1 interval=1s --force",
     "option --force is not valid for rollout start"},
    {"rollout status", "usage: rollout status POOL"},
    {"rollout pause api --json", "option --json is not valid for rollout pause"},
    {"rollout resume", "usage: rollout resume POOL"},
    {"rollout abort api now", "usage: rollout abort POOL"},
    {"audit verify a b", "usage: audit verify [FILE]"},
    {"audit verify --json", "option --json is not valid for audit verify"},
    {"reload now", "usage: reload"},
    {"reload --force", "option --force is not valid for reload"},
    {"upgrade --wait", "option --wait is not valid for upgrade"},
    {"route", "usage: route explain METHOD HOST PATH [NAME:VALUE...] | route maintenance ROUTE "
              "on|off [--retry-after S] [--hold T] | route set ROUTE pool POOL"},
    {"route maintenance payments", "usage: route maintenance ROUTE on|off"},
    {"route maintenance payments maybe", "route maintenance takes on or off (got 'maybe')"},
    {"route maintenance pay/ments on", "bad name 'pay/ments' (route names use"},
    {"route set payments payments-v2", "usage: route set ROUTE pool POOL"},
    {"route set payments pool", "usage: route set ROUTE pool POOL"},
    {"route set payments pool a b", "usage: route set ROUTE pool POOL"},
    {"route set payments pool v2 --force", "option --force is not valid for route set"},
    {"show routes x", "usage: show routes [--json]"},
    {"rollback route a b", "usage: rollback POOL|route ROUTE"},
    {"route explain GET h", "usage: route explain METHOD HOST PATH [NAME:VALUE...]"},
    {"route explain G(T h /", "bad method 'G(T'"},
    {"route explain GET h\x01 /", "bad host 'h?'"},
    {"route explain GET h /a\x7f", "bad path '/a?'"},
    {"route explain GET h / X-A", "bad header 'X-A': expected Name:Value"},
    {"route explain GET h / :v", "bad header ':v': expected Name:Value"},
    {"route explain GET h / X(A:v", "bad header name 'X(A'"},
    {"route explain GET h / --json", "option --json is not valid for route explain"},
    {"route explain GET h / a:1 a:2 a:3 a:4 a:5 a:6 a:7 a:8 a:9 a:10 a:11 a:12 a:13 a:14 a:15 a:16 "
     "a:17 a:18 a:19 a:20 a:21 a:22 a:23 a:24 a:25 a:26 a:27 a:28 a:29 a:30 a:31 a:32 a:33",
     "too many headers (max 32)"},
    {"show pools\r\r", "unknown command 'show pools\?' (try help)"},
    {"show pool ap\ri", "bad name 'ap\?i'"},
};

START_TEST(test_bad_lines_are_refused_with_a_clear_reason)
{
    const struct bad *b = &bad[_i];
    char err[512];
    struct cmd c;

    memset(err, 'X', sizeof(err));
    ck_assert_msg(cmd_parse(b->line, &c, err, sizeof(err)) == -1, "'%s' accepted", b->line);
    ck_assert_msg(memchr(err, '\0', sizeof(err)) != NULL, "err not terminated");
    ck_assert_msg(strstr(err, b->want) != NULL, "'%s'\n got:  %s\n want: %s", b->line, err,
                  b->want);
    for (const char *s = err; *s; s++)
        ck_assert_msg(*s >= 0x20 && *s < 0x7f, "unprintable byte in '%s'", err);
}
END_TEST

/* A line of n bytes: "help" padded with spaces. */
static char *long_line(size_t n)
{
    char *s = malloc(n + 1);

    memset(s, ' ', n);
    memcpy(s, "help", 4);
    s[n] = '\0';
    return s;
}

START_TEST(test_line_of_cmd_line_max_bytes_is_accepted_one_more_is_refused)
{
    char err[128];
    struct cmd c;
    char *ok = long_line(CMD_LINE_MAX), *over = long_line(CMD_LINE_MAX + 1);
    char *huge = long_line(1 << 20);

    ck_assert_int_eq(cmd_parse(ok, &c, err, sizeof(err)), 0);
    ck_assert_int_eq(c.kind, CMD_HELP);
    ck_assert_int_eq(cmd_parse(over, &c, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "line too long (max 4096 bytes)");
    ck_assert_int_eq(cmd_parse(huge, &c, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "line too long (max 4096 bytes)");
    free(ok);
    free(over);
    free(huge);
}
END_TEST

START_TEST(test_too_many_words_is_refused)
{
    char line[1024] = "shift api";
    char err[128];
    struct cmd c;

    for (int i = 0; i < 200; i++)
        strcat(line, " x");
    ck_assert_int_eq(cmd_parse(line, &c, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "too many words (max 128)");
}
END_TEST

static const struct duration {
    const char *s;
    int64_t ms;
} durations[] = {
    {"250ms", 250},
    {"30s", 30000},
    {"2m", 120000},
    {"5", 5000},
    {"1ms", 1},
    {"007s", 7000},
    {"9223372036854775ms", 9223372036854775}, /* INT64_MAX / 1000: fits in microseconds */
    {"9223372036854s", 9223372036854000},
    {"153722867280m", 9223372036800000},
    {"9223372036854776ms", -1},
    {"9223372036855s", -1},
    {"153722867281m", -1},
    {"9223372036854775807", -1},
    {"99999999999999999999999999999ms", -1},
    {"0", -1},
    {"0ms", -1},
    {"0s", -1},
    {"", -1},
    {"ms", -1},
    {"s", -1},
    {"5x", -1},
    {"5h", -1},
    {"5 s", -1},
    {" 5s", -1},
    {"5s ", -1},
    {"-5s", -1},
    {"+5s", -1},
    {"1.5s", -1},
    {"5mss", -1},
    {"5sm", -1},
    {"5MS", -1},
    {"0x10", -1},
};

START_TEST(test_durations)
{
    const struct duration *d = &durations[_i];

    ck_assert_msg(cmd_parse_duration(d->s) == d->ms, "'%s' -> %lld, want %lld", d->s,
                  (long long)cmd_parse_duration(d->s), (long long)d->ms);
}
END_TEST

START_TEST(test_duration_of_null_is_malformed)
{
    ck_assert_int_eq(cmd_parse_duration(NULL), -1);
}
END_TEST

/* The usage a command's refusal quotes, e.g. "set weight POOL/BACKEND WEIGHT [--force]". */
static void usage_of(const char *line, char *out, size_t n)
{
    char err[512];
    struct cmd c;

    ck_assert_int_eq(cmd_parse(line, &c, err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "usage: ", 7) == 0, "'%s': %s", line, err);
    snprintf(out, n, "%s", err + 7);
}

START_TEST(test_help_lists_every_command_with_the_usage_errors_quote)
{
    /* For each kind, a line naming the command with one argument too many. */
    static const char *const too_many[] = {
        "help x",
        "show pools x",
        "show pool a b",
        "set weight a/b 1 2",
        "set state a/b ready x",
        "shift",
        "swap a b",
        "rollback a b",
        "add backend a",
        "del backend a",
        "drain",
        "replace a",
        "maintenance",
        "rollout start",
        "rollout status a b",
        "rollout pause",
        "rollout resume",
        "rollout abort",
        "audit verify a b",
        "reload x",
        "upgrade x",
        "show cluster x",
        "show stats x",
        "route explain",
        "show routes x",
        "route maintenance r on x",
        "route set r pool p x",
        "show discovery x",
        "mirror p off x",
        "mirror report p x",
    };
    const char *help = cmd_help();
    char u[512];

    ck_assert_int_eq((int)ARRAY_LEN(too_many), CMD_LAST + 1);
    for (size_t i = 0; i < ARRAY_LEN(too_many); i++) {
        char line[600];

        usage_of(too_many[i], u, sizeof(u));
        snprintf(line, sizeof(line), "\n%s ", u);
        ck_assert_msg(strstr(help, line) != NULL || strncmp(help, line + 1, strlen(line + 1)) == 0,
                      "help lacks '%s'", u);
    }
    ck_assert_int_eq(help[strlen(help) - 1], '\n');
}
END_TEST

START_TEST(test_every_help_line_starts_with_a_command_that_parses_by_name)
{
    const char *help = cmd_help();
    int lines = 0;

    for (const char *s = help; *s; s = strchr(s, '\n') + 1) {
        int found = 0;

        for (int k = 0; k <= CMD_LAST; k++) {
            const char *name = cmd_kind_name((enum cmd_kind)k);

            found |= strncmp(s, name, strlen(name)) == 0 && s[strlen(name)] == ' ';
        }
        ck_assert_msg(found, "help line without a command: %.40s", s);
        lines++;
    }
    ck_assert_int_eq(lines, CMD_LAST + 1);
}
END_TEST

START_TEST(test_kind_names_are_distinct_and_name_the_parsed_kind)
{
    static const char *const minimal[] = {
        [CMD_HELP] = "",
        [CMD_SHOW_POOLS] = "",
        [CMD_SHOW_POOL] = " a",
        [CMD_SET_WEIGHT] = " a/b 1",
        [CMD_SET_STATE] = " a/b ready",
        [CMD_SHIFT] = " a g=1",
        [CMD_SWAP] = " a",
        [CMD_ROLLBACK] = " a",
        [CMD_ADD_BACKEND] = " a b 127.0.0.1:1",
        [CMD_DEL_BACKEND] = " a b",
        [CMD_DRAIN] = " a/b",
        [CMD_REPLACE] = " a b c 127.0.0.1:1",
        [CMD_MAINTENANCE] = " on",
        [CMD_ROLLOUT_START] = " a canary=g steps=1 interval=1",
        [CMD_ROLLOUT_STATUS] = " a",
        [CMD_ROLLOUT_PAUSE] = " a",
        [CMD_ROLLOUT_RESUME] = " a",
        [CMD_ROLLOUT_ABORT] = " a",
        [CMD_AUDIT_VERIFY] = "",
        [CMD_RELOAD] = "",
        [CMD_UPGRADE] = "",
        [CMD_SHOW_CLUSTER] = "",
        [CMD_SHOW_STATS] = "",
        [CMD_ROUTE_EXPLAIN] = " GET h /",
        [CMD_SHOW_ROUTES] = "",
        [CMD_ROUTE_MAINT] = " r on",
        [CMD_ROUTE_SET] = " r pool p",
        [CMD_SHOW_DISCOVERY] = "",
        [CMD_MIRROR] = " a off",
        [CMD_MIRROR_REPORT] = " a",
    };

    ck_assert_int_eq((int)ARRAY_LEN(minimal), CMD_LAST + 1);
    for (int k = 0; k <= CMD_LAST; k++) {
        char line[128], err[256];
        struct cmd c;

        for (int j = 0; j < k; j++)
            ck_assert_str_ne(cmd_kind_name((enum cmd_kind)j), cmd_kind_name((enum cmd_kind)k));
        snprintf(line, sizeof(line), "%s%s", cmd_kind_name((enum cmd_kind)k), minimal[k]);
        ck_assert_msg(cmd_parse(line, &c, err, sizeof(err)) == 0, "'%s': %s", line, err);
        ck_assert_int_eq(c.kind, k);
    }
    ck_assert_str_eq(cmd_kind_name((enum cmd_kind)999), "unknown");
    ck_assert_str_eq(cmd_kind_name((enum cmd_kind) - 1), "unknown");
}
END_TEST

START_TEST(test_is_change_only_for_commands_that_change_state)
{
    static const struct {
        const char *line;
        bool change;
    } t[] = {
        {"help", false},
        {"show pools", false},
        {"show pool a", false},
        {"show cluster", false},
        {"rollout status a", false},
        {"audit verify", false},
        {"route explain GET h /", false},
        {"mirror report a", false},
        {"mirror a off", true},
        {"set weight a/b 1", true},
        {"set state a/b maint", true},
        {"shift a g=1", true},
        {"swap a", true},
        {"rollback a", true},
        {"add backend a b 127.0.0.1:1", true},
        {"del backend a b", true},
        {"drain a/b", true},
        {"replace a b c 127.0.0.1:1", true},
        {"maintenance off", true},
        {"rollout start a canary=g steps=1 interval=1", true},
        {"rollout pause a", true},
        {"rollout resume a", true},
        {"rollout abort a", true},
        {"reload", true},
        {"upgrade", true},
    };

    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        struct cmd c;
        char err[128];

        ck_assert_int_eq(cmd_parse(t[i].line, &c, err, sizeof(err)), 0);
        ck_assert_msg(c.is_change == t[i].change, "'%s'", t[i].line);
    }
}
END_TEST

START_TEST(test_small_error_buffers_are_truncated_and_terminated)
{
    char err[16];
    struct cmd c;

    for (size_t n = 1; n <= sizeof(err); n++) {
        memset(err, 'X', sizeof(err));
        ck_assert_int_eq(cmd_parse("set weight api/b 1001", &c, err, n), -1);
        ck_assert_uint_eq(strlen(err), n - 1);
        for (size_t i = n; i < sizeof(err); i++)
            ck_assert_int_eq(err[i], 'X');
    }
    ck_assert_int_eq(cmd_parse("foo", &c, NULL, 0), -1);
    memset(err, 'X', sizeof(err));
    ck_assert_int_eq(cmd_parse("foo", &c, err, 0), -1);
    ck_assert_int_eq(err[0], 'X');
    ck_assert_int_eq(cmd_parse(NULL, &c, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "empty command");
    ck_assert_int_eq(cmd_parse("help", &c, NULL, 0), 0);
}
END_TEST

START_TEST(test_a_failed_parse_does_not_leak_into_the_next)
{
    char err[128];
    struct cmd c;

    ck_assert_int_eq(cmd_parse("drain api/b --timeout 5s --wait x", &c, err, sizeof(err)), -1);
    ck_assert_int_eq(cmd_parse("help", &c, err, sizeof(err)), 0);
    ck_assert_str_eq(err, "");
    ck_assert_int_eq(c.timeout_ms, -1);
    ck_assert(!c.wait);
    ck_assert_str_eq(c.pool, "");
}
END_TEST

/*
 * ck_assert_msg marks a checkpoint (a write to a pipe) on every success;
 * the random test checks millions of things, so it only calls Check to fail.
 */
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)

/* xorshift64: a fixed sequence on every run and platform. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static bool is_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n >= CMD_NAME_MAX)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* Backend names may also hold ':', '[' and ']' (discovery's "<entry>-<address>"). */
static bool is_backend_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n >= CMD_NAME_MAX)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:[]") == n;
}

/* What a successful parse promises, whatever the line. */
static void check_invariants(const char *line, const struct cmd *c)
{
    EXPECT(c->kind >= CMD_HELP && c->kind <= CMD_LAST, "'%s'", line);
    EXPECT(c->pool[0] == '\0' || is_name(c->pool), "'%s'", line);
    EXPECT(c->backend[0] == '\0' || is_backend_name(c->backend), "'%s'", line);
    EXPECT(c->weight >= -1 && c->weight <= 1000, "'%s'", line);
    EXPECT(c->nshares >= 0 && c->nshares <= CMD_MAX_SHARES, "'%s'", line);
    for (int i = 0; i < c->nshares; i++)
        EXPECT(is_name(c->shares[i].group) && c->shares[i].share >= 0 && c->shares[i].share <= 100,
               "'%s'", line);
    EXPECT(c->nsteps >= 0 && c->nsteps <= CMD_MAX_STEPS, "'%s'", line);
    for (int i = 0; i < c->nsteps; i++)
        EXPECT(c->steps[i] >= 1 && c->steps[i] <= 100 && (i == 0 || c->steps[i] > c->steps[i - 1]),
               "'%s'", line);
    EXPECT(c->timeout_ms == -1 || c->timeout_ms > 0, "'%s'", line);
    EXPECT(c->hold_ms == -1 || c->hold_ms > 0, "'%s'", line);
    EXPECT(c->retry_after >= -1 && c->retry_after <= 86400, "'%s'", line);
    EXPECT(c->max_error_rate == -1 || (c->max_error_rate >= 0 && c->max_error_rate <= 100), "'%s'",
           line);
}

static const char *const pieces[] = {
    "show",
    "pool",
    "pools",
    "cluster",
    "set",
    "weight",
    "state",
    "shift",
    "swap",
    "rollback",
    "add",
    "backend",
    "del",
    "drain",
    "replace",
    "maintenance",
    "on",
    "off",
    "rollout",
    "start",
    "status",
    "pause",
    "resume",
    "abort",
    "audit",
    "verify",
    "reload",
    "upgrade",
    "help",
    "api",
    "api/b",
    "a/b/c",
    "/",
    "blue=",
    "green=",
    "=",
    ",",
    "%",
    ".",
    "0",
    "1",
    "5",
    "100",
    "101",
    "1000",
    "1001",
    "65535",
    "65536",
    "99999999999999999999",
    "ms",
    "s",
    "m",
    "--json",
    "--force",
    "--wait",
    "--timeout",
    "--retry-after",
    "--hold",
    "--",
    "-",
    "canary=",
    "steps=",
    "interval=",
    "max-error-rate=",
    "max-p99=",
    "min-requests=",
    "127.0.0.1:",
    "[::1]:",
    "[",
    "]",
    ":",
    "localhost",
    " ",
    " ",
    " ",
    "\t",
    "\r",
    "\x01",
    "\x7f",
    "\xff",
    "\xc3\xa9",
    "x",
    N63,
};

/* A random line: pieces glued together, or a good line with a few bytes or pieces changed. */
static void random_line(uint64_t *seed, char *line, size_t n)
{
    int npieces = (int)(rnd(seed) % 16);

    line[0] = '\0';
    if (rnd(seed) % 2 == 0) {
        for (int i = 0; i < npieces; i++)
            strcat(line, pieces[rnd(seed) % ARRAY_LEN(pieces)]);
        return;
    }
    snprintf(line, n, "%s", good[rnd(seed) % ARRAY_LEN(good)].line);
    for (int m = (int)(rnd(seed) % 3); m >= 0; m--) {
        size_t len = strlen(line), at = len ? rnd(seed) % len : 0;
        const char *piece = pieces[rnd(seed) % ARRAY_LEN(pieces)];

        switch (rnd(seed) % 4) {
        case 0: /* truncate */
            line[at] = '\0';
            break;
        case 1: /* overwrite one byte */
            if (len)
                line[at] = piece[0] ? piece[0] : ' ';
            break;
        case 2: /* delete one byte */
            memmove(line + at, line + at + (len ? 1 : 0), len - at);
            break;
        default: /* insert a piece */
            if (len + strlen(piece) + 1 < n) {
                memmove(line + at + strlen(piece), line + at, len - at + 1);
                memcpy(line + at, piece, strlen(piece));
            }
        }
    }
}

START_TEST(test_random_lines_never_crash_and_always_terminate_err)
{
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    char line[1024], err[96];
    struct cmd c;
    int accepted = 0;

    for (int iter = 0; iter < 100000; iter++) {
        size_t errlen = rnd(&seed) % 4 == 0 ? 1 + rnd(&seed) % 40 : 64;
        int r;

        random_line(&seed, line, sizeof(line));
        memset(err, 'X', sizeof(err));
        r = cmd_parse(line, &c, err, errlen);
        EXPECT(r == 0 || r == -1, "'%s' returned %d", line, r);
        EXPECT(memchr(err, '\0', errlen) != NULL, "'%s': err not terminated", line);
        for (size_t i = errlen; i < sizeof(err); i++)
            EXPECT(err[i] == 'X', "'%s': wrote past errlen", line);
        if (r == 0) {
            check_invariants(line, &c);
            accepted++;
        } else if (errlen > 1) {
            EXPECT(err[0] != '\0', "'%s': refused without a reason", line);
        }
    }
    /* Both outcomes are exercised in bulk, so the deep paths of every command are reached. */
    ck_assert_int_gt(accepted, 2000);
    ck_assert_int_lt(accepted, 95000);
}
END_TEST

static Suite *cmd_suite(void)
{
    Suite *s = suite_create("cmd");
    TCase *tc = tcase_create("parse");

    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_good_lines_parse_to_the_expected_fields, 0, (int)ARRAY_LEN(good));
    tcase_add_loop_test(tc, test_bad_lines_are_refused_with_a_clear_reason, 0, (int)ARRAY_LEN(bad));
    tcase_add_test(tc, test_line_of_cmd_line_max_bytes_is_accepted_one_more_is_refused);
    tcase_add_test(tc, test_too_many_words_is_refused);
    tcase_add_loop_test(tc, test_durations, 0, (int)ARRAY_LEN(durations));
    tcase_add_test(tc, test_duration_of_null_is_malformed);
    tcase_add_test(tc, test_help_lists_every_command_with_the_usage_errors_quote);
    tcase_add_test(tc, test_every_help_line_starts_with_a_command_that_parses_by_name);
    tcase_add_test(tc, test_kind_names_are_distinct_and_name_the_parsed_kind);
    tcase_add_test(tc, test_is_change_only_for_commands_that_change_state);
    tcase_add_test(tc, test_small_error_buffers_are_truncated_and_terminated);
    tcase_add_test(tc, test_a_failed_parse_does_not_leak_into_the_next);
    tcase_add_test(tc, test_random_lines_never_crash_and_always_terminate_err);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cmd_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
