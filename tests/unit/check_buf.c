/*
 * check_buf.c - buffers: cache reuse, compaction, growth for large heads
 * with the shift reported, and socket reads and gathered writes.
 */
#include "buf.h"

#include <check.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

START_TEST(test_cache_reuses_standard_buffers)
{
    struct vbuf_cache c;
    struct vbuf *a, *b;

    vbuf_cache_init(&c, 4);
    a = vbuf_get(&c);
    ck_assert_uint_eq(a->size, VBUF_SIZE);
    ck_assert_uint_eq(vbuf_len(a), 0);
    a->start = 3;
    a->end = 10;
    vbuf_put(&c, a);
    ck_assert_uint_eq(c.nfree, 1);
    b = vbuf_get(&c);
    ck_assert_ptr_eq(a, b);
    ck_assert_uint_eq(vbuf_len(b), 0); /* handed out empty */
    vbuf_put(&c, b);
    vbuf_put(&c, NULL);
    vbuf_cache_destroy(&c);
    ck_assert_uint_eq(c.nfree, 0);
}
END_TEST

/*
 * vbuf_cache_trim (once a second, reclaim.c) frees half of what the cache
 * held unused all period, and says "trim the allocator" once the buffers in
 * existence fell VBUF_TRIM_BUFFERS below their peak.
 */
START_TEST(test_cache_trim_gives_back_what_a_burst_left)
{
    struct vbuf_cache c;
    struct vbuf *b[300];

    vbuf_cache_init(&c, 1000);
    for (int i = 0; i < 300; i++)
        b[i] = vbuf_get(&c);
    ck_assert_uint_eq(c.allocated, 300);
    ck_assert_uint_eq(c.peak, 300);
    for (int i = 0; i < 300; i++)
        vbuf_put(&c, b[i]);
    ck_assert_uint_eq(c.nfree, 300);
    ck_assert(!vbuf_cache_trim(&c)); /* low was 0 (the burst took them all): nothing goes */
    ck_assert_uint_eq(c.nfree, 300);
    ck_assert(vbuf_cache_trim(&c)); /* 300 unused all period: 150 go, 150 below the peak */
    ck_assert_uint_eq(c.nfree, 150);
    ck_assert_uint_eq(c.allocated, 150);
    /* Steady use of 10 buffers keeps them: only the unused part halves. */
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 10; i++)
            b[i] = vbuf_get(&c);
        for (int i = 0; i < 10; i++)
            vbuf_put(&c, b[i]);
        vbuf_cache_trim(&c);
    }
    ck_assert_uint_ge(c.nfree, 10);
    ck_assert_uint_le(c.nfree, 11);
    vbuf_cache_destroy(&c);
}
END_TEST

START_TEST(test_cache_is_bounded)
{
    struct vbuf_cache c;
    struct vbuf *b[8];

    vbuf_cache_init(&c, 2);
    for (int i = 0; i < 8; i++)
        b[i] = vbuf_get(&c);
    for (int i = 0; i < 8; i++)
        vbuf_put(&c, b[i]);
    ck_assert_uint_eq(c.nfree, 2);
    vbuf_cache_destroy(&c);
}
END_TEST

START_TEST(test_reserve_compacts_then_grows_up_to_limit)
{
    struct vbuf_cache c;
    struct vbuf *b;
    uint32_t shift;

    vbuf_cache_init(&c, 4);
    b = vbuf_get(&c);
    memset(b->data, 'x', VBUF_SIZE);
    b->start = 100;
    b->end = VBUF_SIZE;
    memcpy(b->data + 100, "head", 4);
    ck_assert_int_eq(vbuf_reserve(&c, &b, 50, VBUF_SIZE, &shift), 0);
    ck_assert_uint_eq(shift, 100);
    ck_assert_uint_eq(b->start, 0);
    ck_assert(memcmp(b->data, "head", 4) == 0);
    b->end = VBUF_SIZE;
    ck_assert_int_eq(vbuf_reserve(&c, &b, 1, VBUF_SIZE, &shift), -1);
    ck_assert_int_eq(vbuf_reserve(&c, &b, 1000, 40000, &shift), 0);
    ck_assert_uint_ge(b->size, VBUF_SIZE + 1000);
    ck_assert_uint_le(b->size, 40000);
    ck_assert_uint_eq(vbuf_len(b), VBUF_SIZE);
    ck_assert(memcmp(b->data, "head", 4) == 0);
    ck_assert_uint_eq(c.nfree, 1); /* the outgrown standard buffer went back */
    vbuf_put(&c, b);               /* larger buffers go back to the allocator */
    ck_assert_uint_eq(c.nfree, 1);
    vbuf_cache_destroy(&c);
}
END_TEST

START_TEST(test_read_appends_from_socket)
{
    struct vbuf_cache c;
    struct vbuf *b;
    int p[2];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
    ck_assert_int_eq(write(p[1], "hello", 5), 5);
    vbuf_cache_init(&c, 1);
    b = vbuf_get(&c);
    vbuf_add(b, "> ", 2);
    ck_assert_int_eq(vbuf_read(b, p[0]), 5);
    ck_assert_uint_eq(vbuf_len(b), 7);
    ck_assert(memcmp(b->data, "> hello", 7) == 0);
    close(p[1]);
    ck_assert_int_eq(vbuf_read(b, p[0]), 0);
    close(p[0]);
    vbuf_put(&c, b);
    vbuf_cache_destroy(&c);
}
END_TEST

START_TEST(test_sendv_writes_every_piece_in_order)
{
    struct iovec one[1] = {{(void *)"GET / HTTP/1.1\r\n", 16}};
    struct iovec three[3] = {{(void *)"Host: a\r\n", 9}, {(void *)"", 0}, {(void *)"\r\n", 2}};
    char got[64];
    int p[2];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
    ck_assert_int_eq(vbuf_sendv(p[0], one, 1), 16);
    ck_assert_int_eq(vbuf_sendv(p[0], three, 3), 11);
    ck_assert_int_eq(read(p[1], got, sizeof(got)), 27);
    ck_assert(memcmp(got, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27) == 0);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* The test runs with SIGPIPE at its default action: a write that raised it would kill us. */
START_TEST(test_sendv_to_closed_peer_fails_without_sigpipe)
{
    struct iovec iov[2] = {{(void *)"a", 1}, {(void *)"b", 1}};
    int p[2];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
    close(p[1]);
    ck_assert_int_eq(vbuf_sendv(p[0], iov, 1), -1);
    ck_assert_int_eq(errno, EPIPE);
    ck_assert_int_eq(vbuf_sendv(p[0], iov, 2), -1);
    ck_assert_int_eq(errno, EPIPE);
    close(p[0]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("buf");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_cache_reuses_standard_buffers);
    tcase_add_test(tc, test_cache_is_bounded);
    tcase_add_test(tc, test_cache_trim_gives_back_what_a_burst_left);
    tcase_add_test(tc, test_reserve_compacts_then_grows_up_to_limit);
    tcase_add_test(tc, test_read_appends_from_socket);
    tcase_add_test(tc, test_sendv_writes_every_piece_in_order);
    tcase_add_test(tc, test_sendv_to_closed_peer_fails_without_sigpipe);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
