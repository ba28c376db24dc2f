#!/usr/bin/env python3
"""A black-hole HTTP standby for bench/mirror: it accepts every connection and never answers.

    blackhole.py PORT_FILE STATS_FILE [PORT]

Listens on 127.0.0.1:PORT (default 0: a port the kernel picks), with the largest backlog the kernel allows, and
writes the port to PORT_FILE (atomically). Connections are accepted as fast as they arrive, so a
connect always succeeds; what a peer sends is read and thrown away (so nothing piles up in the
kernel), nothing is ever written back, and a connection is closed only when its peer closes it.
On SIGUSR1 it writes "SEQ ACCEPTED OPEN MAX_OPEN BYTES" to STATS_FILE (atomically; SEQ counts
the SIGUSR1s), so a caller can read its counters between runs. SIGTERM and SIGINT end it.
"""
import os
import selectors
import signal
import socket
import sys


def write_atomic(path, text):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    port_file, stats_file = sys.argv[1], sys.argv[2]
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(65535)  # the kernel caps it at net.core.somaxconn
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ)
    st = {"seq": 0, "accepted": 0, "open": 0, "max_open": 0, "bytes": 0}

    def stats(*_):
        # Runs between two bytecodes of the loop below: each counter is whole, and they are at
        # most one event apart.
        st["seq"] += 1
        write_atomic(stats_file, "{seq} {accepted} {open} {max_open} {bytes}\n".format(**st))

    signal.signal(signal.SIGUSR1, stats)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    write_atomic(port_file, f"{lsock.getsockname()[1]}\n")
    while True:
        try:
            events = sel.select(timeout=1.0)
        except InterruptedError:
            continue
        for key, _ in events:
            s = key.fileobj
            if s is lsock:
                while True:
                    try:
                        c, _ = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # out of fds: the rest wait in the backlog
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ)
                    st["accepted"] += 1
                    st["open"] += 1
                    st["max_open"] = max(st["max_open"], st["open"])
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                st["bytes"] += len(data)
                continue
            sel.unregister(s)
            s.close()
            st["open"] -= 1


if __name__ == "__main__":
    main()
