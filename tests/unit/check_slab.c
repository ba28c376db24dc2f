/*
 * check_slab.c - slab pools: slots page-aligned and of the rounded size, a
 * slab per SLAB_BYTES, freed slots' pages given back at once (mincore says
 * so), empty slabs unmapped, and slabs with room found first after frees.
 */
#include "slab.h"

#include <check.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SLABS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLABS 0
#endif
#endif
#ifndef SLABS
#define SLABS 1
#endif

/* Pages of [p, p + len) resident in memory. */
static unsigned resident(void *p, size_t len)
{
    long ps = sysconf(_SC_PAGESIZE);
    unsigned char vec[256];
    unsigned n = 0;

    ck_assert_uint_le(len / (size_t)ps, sizeof(vec));
    ck_assert_int_eq(mincore(p, len, vec), 0);
    for (size_t i = 0; i < len / (size_t)ps; i++)
        n += vec[i] & 1;
    return n;
}

START_TEST(test_slots_are_aligned_and_pages_go_back)
{
    struct slab_pool p;
    char *a, *b;

    slab_pool_init(&p, 10000); /* rounded up to 3 pages */
    ck_assert_uint_eq(p.slot, 12288);
    ck_assert_uint_eq(p.nslots, SLAB_BYTES / 12288);
    a = slab_alloc(&p);
    if (!SLABS) {
        ck_assert_ptr_null(a); /* sanitizer build: callers use malloc */
        return;
    }
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq((uintptr_t)a % 4096, 0);
    ck_assert_uint_eq(p.nslabs, 1);
    memset(a, 'x', p.slot);
    ck_assert_uint_eq(resident(a, p.slot), 3);
    b = slab_alloc(&p);
    ck_assert_ptr_eq(b, a + p.slot); /* the next slot of the same slab */
    memset(b, 'y', p.slot);
    slab_free(&p, a);
    ck_assert_uint_eq(resident(a, p.slot), 0); /* given back at once */
    ck_assert_uint_eq(resident(b, p.slot), 3);
    ck_assert_uint_eq(p.used, 1);
    a = slab_alloc(&p); /* the freed slot again, fresh zero pages */
    ck_assert_ptr_eq(a, b - p.slot);
    ck_assert_int_eq(a[0], 0);
    slab_free(&p, a);
    slab_free(&p, b);
    ck_assert_uint_eq(p.nslabs, 0); /* empty: unmapped */
    slab_pool_destroy(&p);
}
END_TEST

START_TEST(test_many_slabs_and_room_first)
{
    struct slab_pool p;
    void *v[200];
    unsigned per;

    slab_pool_init(&p, 16384);
    per = p.nslots - 1; /* slot 0 is the header */
    if (slab_alloc(&p) == NULL) {
        ck_assert(!SLABS);
        return;
    }
    slab_pool_destroy(&p);
    slab_pool_init(&p, 16384);
    for (unsigned i = 0; i < 200; i++) {
        v[i] = slab_alloc(&p);
        ck_assert_ptr_nonnull(v[i]);
        for (unsigned k = 0; k < i; k++)
            ck_assert_ptr_ne(v[i], v[k]);
    }
    ck_assert_uint_eq(p.nslabs, (200 + per - 1) / per);
    ck_assert_uint_eq(p.used, 200);
    /* A slot freed in the first (full) slab: the next allocation takes it. */
    slab_free(&p, v[3]);
    ck_assert_ptr_eq(slab_alloc(&p), v[3]);
    for (unsigned i = 0; i < 200; i++)
        slab_free(&p, v[i]);
    ck_assert_uint_eq(p.nslabs, 0);
    ck_assert_uint_eq(p.used, 0);
    /* Destroy with objects still out unmaps them too. */
    for (unsigned i = 0; i < 100; i++)
        v[i] = slab_alloc(&p);
    slab_pool_destroy(&p);
    ck_assert_uint_eq(p.nslabs, 0);
}
END_TEST

static Suite *slab_suite(void)
{
    Suite *s = suite_create("slab");
    TCase *tc = tcase_create("slab");

    tcase_add_test(tc, test_slots_are_aligned_and_pages_go_back);
    tcase_add_test(tc, test_many_slabs_and_room_first);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(slab_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
