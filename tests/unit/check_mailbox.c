/*
 * check_mailbox.c - the thread-to-thread queue (mailbox.c): messages come
 * out oldest first, the eventfd is readable exactly while something waits
 * (or after a bare wake), an empty take is empty, what is left at free is
 * handed back in order, and several threads posting at once lose nothing,
 * duplicate nothing, keep each thread's order, and never leave a message
 * without a wake-up (the consumer only takes when its descriptor says so).
 */
#include "mailbox.h"
#include "veer.h"

#include <check.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct msg {
    struct mailbox_node node;
    unsigned producer;
    unsigned seq;
};

static struct msg *msg_of(struct mailbox_node *n)
{
    return container_of(n, struct msg, node);
}

/* Whether fd is readable within ms milliseconds. */
static bool readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc = poll(&p, 1, ms);

    ck_assert_int_ge(rc, 0);
    return rc == 1 && (p.revents & POLLIN);
}

START_TEST(test_take_returns_every_post_oldest_first)
{
    enum { N = 1000 };
    static struct msg m[N];
    struct mailbox mb;
    struct mailbox_node *n;
    unsigned k = 0;

    ck_assert_int_eq(mailbox_init(&mb), VEER_OK);
    for (unsigned i = 0; i < N; i++) {
        m[i].seq = i;
        mailbox_post(&mb, &m[i].node);
    }
    ck_assert_uint_eq(mailbox_count(&mb), N);
    for (n = mailbox_take(&mb); n; n = n->next)
        ck_assert_uint_eq(msg_of(n)->seq, k++);
    ck_assert_uint_eq(k, N);
    ck_assert_uint_eq(mailbox_count(&mb), 0);
    ck_assert_ptr_null(mailbox_take(&mb));
    mailbox_free(&mb, NULL);
}
END_TEST

START_TEST(test_empty_take_is_empty_and_not_readable)
{
    struct mailbox mb;

    ck_assert_int_eq(mailbox_init(&mb), VEER_OK);
    ck_assert_int_ge(mailbox_fd(&mb), 0);
    ck_assert(!readable(mailbox_fd(&mb), 0));
    ck_assert_ptr_null(mailbox_take(&mb));
    ck_assert_uint_eq(mailbox_count(&mb), 0);
    ck_assert(!readable(mailbox_fd(&mb), 0));
    mailbox_free(&mb, NULL);
}
END_TEST

/* Readable once something is posted, however many; not after the take; again on the next post. */
START_TEST(test_fd_readable_after_a_post_and_not_after_the_take)
{
    struct msg a = {.seq = 1}, b = {.seq = 2}, c = {.seq = 3};
    struct mailbox mb;
    struct mailbox_node *n;

    ck_assert_int_eq(mailbox_init(&mb), VEER_OK);
    mailbox_post(&mb, &a.node);
    ck_assert(readable(mailbox_fd(&mb), 0));
    mailbox_post(&mb, &b.node);
    ck_assert(readable(mailbox_fd(&mb), 0));
    n = mailbox_take(&mb);
    ck_assert(!readable(mailbox_fd(&mb), 0));
    ck_assert_ptr_eq(n, &a.node);
    ck_assert_ptr_eq(n->next, &b.node);
    ck_assert_ptr_null(n->next->next);

    mailbox_post(&mb, &c.node);
    ck_assert(readable(mailbox_fd(&mb), 0));
    n = mailbox_take(&mb);
    ck_assert_ptr_eq(n, &c.node);
    ck_assert_ptr_null(n->next);
    ck_assert(!readable(mailbox_fd(&mb), 0));
    mailbox_free(&mb, NULL);
}
END_TEST

/* mailbox_wake: readable with nothing queued; the take is empty and clears it. */
START_TEST(test_wake_without_a_message)
{
    struct mailbox mb;

    ck_assert_int_eq(mailbox_init(&mb), VEER_OK);
    mailbox_wake(&mb);
    ck_assert(readable(mailbox_fd(&mb), 0));
    ck_assert_ptr_null(mailbox_take(&mb));
    ck_assert(!readable(mailbox_fd(&mb), 0));
    mailbox_free(&mb, NULL);
}
END_TEST

static unsigned dropped[8], ndropped;

static void drop(struct mailbox_node *n)
{
    ck_assert_uint_lt(ndropped, 8);
    dropped[ndropped++] = msg_of(n)->seq;
}

START_TEST(test_free_hands_back_what_is_left_oldest_first)
{
    struct msg m[3] = {{.seq = 10}, {.seq = 11}, {.seq = 12}};
    struct mailbox mb = MAILBOX_INITIALIZER;

    mailbox_free(&mb, drop); /* never initialised: nothing to do */
    ck_assert_uint_eq(ndropped, 0);
    ck_assert_int_eq(mailbox_init(&mb), VEER_OK);
    for (unsigned i = 0; i < 3; i++)
        mailbox_post(&mb, &m[i].node);
    mailbox_free(&mb, drop);
    ck_assert_uint_eq(ndropped, 3);
    for (unsigned i = 0; i < 3; i++)
        ck_assert_uint_eq(dropped[i], 10 + i);
    ck_assert_int_eq(mailbox_fd(&mb), -1);
    mailbox_free(&mb, drop); /* twice: harmless */
    ck_assert_uint_eq(ndropped, 3);
}
END_TEST

/* --- several producers at once -------------------------------------------------------- */

#define PRODUCERS 4
#define PER       20000

static struct {
    struct mailbox mb;
    pthread_barrier_t go;
    struct msg m[PRODUCERS][PER];
} P;

static void *producer(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;

    pthread_barrier_wait(&P.go);
    for (unsigned i = 0; i < PER; i++) {
        P.m[id][i].producer = id;
        P.m[id][i].seq = i;
        mailbox_post(&P.mb, &P.m[id][i].node);
    }
    return NULL;
}

/*
 * Every message arrives exactly once and each producer's in the order it
 * posted them (the next expected sequence number per producer). The
 * consumer takes only when the descriptor is readable, with a generous
 * deadline: a message left without a wake-up fails the test.
 */
START_TEST(test_concurrent_producers_lose_nothing_and_keep_their_order)
{
    pthread_t t[PRODUCERS];
    unsigned next[PRODUCERS] = {0}, got = 0;

    memset(&P, 0, sizeof(P));
    ck_assert_int_eq(mailbox_init(&P.mb), VEER_OK);
    pthread_barrier_init(&P.go, NULL, PRODUCERS + 1);
    for (uintptr_t i = 0; i < PRODUCERS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, producer, (void *)i), 0);
    pthread_barrier_wait(&P.go);
    while (got < PRODUCERS * PER) {
        ck_assert_msg(readable(mailbox_fd(&P.mb), 10000),
                      "%u of %u messages received, then no wake-up", got, PRODUCERS * PER);
        for (struct mailbox_node *n = mailbox_take(&P.mb); n; n = n->next) {
            struct msg *m = msg_of(n);

            ck_assert_uint_lt(m->producer, PRODUCERS);
            ck_assert_msg(m->seq == next[m->producer],
                          "producer %u: message %u arrived, %u expected", m->producer, m->seq,
                          next[m->producer]);
            next[m->producer]++;
            got++;
        }
    }
    for (unsigned i = 0; i < PRODUCERS; i++) {
        pthread_join(t[i], NULL);
        ck_assert_uint_eq(next[i], PER);
    }
    ck_assert_ptr_null(mailbox_take(&P.mb));
    pthread_barrier_destroy(&P.go);
    mailbox_free(&P.mb, NULL);
}
END_TEST

static Suite *mailbox_suite(void)
{
    Suite *s = suite_create("mailbox");
    TCase *tc = tcase_create("queue");

    tcase_add_test(tc, test_take_returns_every_post_oldest_first);
    tcase_add_test(tc, test_empty_take_is_empty_and_not_readable);
    tcase_add_test(tc, test_fd_readable_after_a_post_and_not_after_the_take);
    tcase_add_test(tc, test_wake_without_a_message);
    tcase_add_test(tc, test_free_hands_back_what_is_left_oldest_first);
    tcase_add_test(tc, test_concurrent_producers_lose_nothing_and_keep_their_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mailbox_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
