#!/usr/bin/env python3
"""aiosmtpd with AUTH (PLAIN and LOGIN, no TLS) for tests/interop_blast.rs.

    python3 tests/interop/aiosmtpd_auth.py PORT USER PASSWORD [MAX_SECONDS]

Listens on 127.0.0.1:PORT, requires AUTH before MAIL, accepts USER/PASSWORD
only, and counts the messages it receives. Prints "READY" once listening;
when its standard input closes (or after MAX_SECONDS, default 120) it prints
"DELIVERED <n> AUTH_OK <n> AUTH_FAILED <n>" and exits.
"""
import logging
import sys
import threading
import warnings

# AUTH without TLS is the point here (loopback only): keep stderr quiet.
warnings.filterwarnings("ignore")
logging.getLogger("mail.log").setLevel(logging.CRITICAL)

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.delivered = 0
        self.auth_ok = 0
        self.auth_failed = 0

    def add(self, field):
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)


def main():
    port = int(sys.argv[1])
    user, password = sys.argv[2].encode(), sys.argv[3].encode()
    max_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
    counts = Counter()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            counts.add("delivered")
            return "250 2.0.0 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user
            and auth_data.password == password
        )
        counts.add("auth_ok" if ok else "auth_failed")
        # handled=False: aiosmtpd itself answers 535 on failure.
        return AuthResult(success=ok, handled=False)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    print("READY", flush=True)
    done = threading.Event()

    def wait_stdin():
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    done.wait(max_seconds)
    controller.stop()
    print(
        f"DELIVERED {counts.delivered} AUTH_OK {counts.auth_ok} "
        f"AUTH_FAILED {counts.auth_failed}",
        flush=True,
    )


if __name__ == "__main__":
    main()
