/*
 * fuzz_config.c - libFuzzer target: conf_load() on arbitrary config text.
 *
 * The input is written to a file in a private directory under /dev/shm (or
 * $TMPDIR, /tmp) and loaded; the result is walked and freed, so leaks on the
 * error paths and out-of-bounds reads of the struct show up under ASan/LSan.
 * The error text must be one NUL-terminated "FILE:LINE: message" within the
 * buffer. Inputs that @include a path with a '/' are skipped: libconfig would
 * read that file (think /dev/stdin); a bare name is looked up in the
 * current directory and usually not found (".." and "." are directories:
 * veer must refuse them, libconfig's scanner would exit()).
 */
#include "conf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];
static char path[300];

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_config: %s\n", what);
        abort();
    }
}

static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *bases[] = {"/dev/shm", getenv("TMPDIR"), "/tmp"};

    (void)argc;
    (void)argv;
    for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
        if (bases[i] == NULL)
            continue;
        snprintf(dir, sizeof(dir), "%s/veer-fuzz-conf-XXXXXX", bases[i]);
        if (mkdtemp(dir) != NULL)
            break;
        dir[0] = '\0';
    }
    check(dir[0] != '\0', "cannot make a temporary directory");
    snprintf(path, sizeof(path), "%s/veer.conf", dir);
    atexit(cleanup);
    return 0;
}

/* The same for the keys the modules parse (their sections' objects). */
static size_t walk_module_keys(const struct veer_conf *c)
{
    const struct conf_strings *allow = conf_value(c, "maintenance.allow");
    char *const *prefix = conf_value(c, "health_endpoints.prefix");
    char *const *log = conf_value(c, "access_log");
    size_t n = 0;

    check(allow != NULL && prefix != NULL && *prefix != NULL && log != NULL,
          "a module key has no value");
    for (int i = 0; i < allow->n; i++)
        n += strlen(allow->v[i]);
    return n + strlen(*prefix) + (*log ? strlen(*log) : 0);
}

/* Touch every string and array of a loaded config (ASan checks the reads). */
static size_t walk(const struct veer_conf *c)
{
    size_t n = strlen(c->path);

    for (int i = 0; i < c->nlistens; i++) {
        n += strlen(c->listens[i].pool) + strlen(c->listens[i].addr.text);
        check(c->listens[i].pool_index >= 0 && c->listens[i].pool_index < c->npools,
              "listener points to no pool");
        if (c->listens[i].tls)
            for (int k = 0; k < c->listens[i].tls->ncerts; k++)
                n += strlen(c->listens[i].tls->certs[k].cert);
    }
    for (int i = 0; i < c->npools; i++) {
        const struct conf_pool *p = &c->pools[i];

        n += strlen(p->name);
        check(conf_find_pool(c, p->name) != NULL, "a pool cannot be found by its name");
        for (int k = 0; k < p->nbackends; k++)
            n += strlen(p->backends[k].name) + strlen(p->backends[k].group);
        for (int k = 0; k < p->nshares; k++)
            n += strlen(p->shares[k].group);
    }
    n += walk_module_keys(c);
    for (int i = 0; i < c->cluster.netcd; i++)
        n += strlen(c->cluster.etcd[i]);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512], addr_err[256], *text;
    struct veer_conf *c;
    struct conf_addr a;
    FILE *f;

    for (size_t i = 0; i + 8 < size; i++)
        if (memcmp(data + i, "@include", 8) == 0 && memchr(data + i, '/', size - i))
            return 0;
    f = fopen(path, "wb");
    check(f != NULL, "cannot write the config file");
    check(fwrite(data, 1, size, f) == size && fclose(f) == 0, "cannot write the config file");
    memset(err, 'X', sizeof(err));
    err[sizeof(err) - 1] = '\0';
    c = conf_load(path, err, sizeof(err));
    if (c != NULL) {
        walk(c);
        conf_free(c);
    } else {
        check(memchr(err, '\0', sizeof(err)) != NULL, "error text not terminated");
        check(err[0] != '\0' && err[0] != 'X' && strchr(err, ':') != NULL,
              "no \"FILE:LINE: message\" error text");
    }
    /* The same bytes as an address, where listen/backend addresses go. */
    text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    conf_parse_addr(text, size & 1, &a, addr_err, sizeof(addr_err));
    free(text);
    return 0;
}
