"""Is a mail client's retry behaviour sane? The sink injects the faults and
judges the client; each test tells its client apart by its EHLO name.

Stand-ins for your code: deliver_politely (retries a 451 after a delay,
gives up on a 5xx) and deliver_hastily (retries at once, even after a 550).
"""

import smtplib
import time

# Faults for one client, and the behaviour expected of it: the first RCPT to
# later@ gets 451 and the next 250; nobody@ always gets 550. A retry must
# wait 200 ms (the default is 1 s; shortened to keep the test fast).
PLAN = """
expect:
  - retry_4xx_min_interval>=200ms
rules:
  - name: deferred-once
    stage: rcpt
    match: { recipient: "later@*" }
    sequence: [451, 250]
  - name: unknown-user
    stage: rcpt
    match: { recipient: "nobody@*" }
    action: { reply: { code: 550, enhanced: "5.1.1", text: "User unknown" } }
"""


def send_once(sink, helo, rcpt):
    """One attempt on a new connection (QUIT at the end of `with`); the
    reply code for the recipient."""
    with smtplib.SMTP(sink.host, sink.port, local_hostname=helo, timeout=10) as smtp:
        try:
            smtp.sendmail(f"app@{helo}.test", [rcpt], b"Subject: hello\r\n\r\nhi\r\n")
            return 250
        except smtplib.SMTPRecipientsRefused as refused:
            return refused.recipients[rcpt][0]


def deliver_politely(sink, helo, rcpt, retry_after_s=0.3, attempts=5):
    for _ in range(attempts):
        code = send_once(sink, helo, rcpt)
        if not 400 <= code < 500:
            return code  # delivered, or bounced for good
        time.sleep(retry_after_s)  # the behaviour under test: back off
    return code


def deliver_hastily(sink, helo, rcpt):
    code = send_once(sink, helo, rcpt)
    if code >= 400:
        code = send_once(sink, helo, rcpt)  # at once, even after a 5xx
    return code


def results(verdict):
    return {rule["rule"]: rule["result"] for rule in verdict["rules"]}


def test_polite_client_passes(sink):
    sink.load_plan("polite-app", PLAN)
    assert deliver_politely(sink, "polite-app", "later@example.test") == 250
    assert deliver_politely(sink, "polite-app", "nobody@example.test") == 550

    verdict = sink.verdict("polite-app")
    assert verdict["verdict"] == "pass", verdict
    assert results(verdict)["retry_4xx_min_interval"] == "pass", verdict
    assert results(verdict)["resent_after_5xx"] == "pass", verdict


def test_hasty_client_fails(sink):
    sink.load_plan("hasty-app", PLAN)
    assert deliver_hastily(sink, "hasty-app", "later@example.test") == 250
    assert deliver_hastily(sink, "hasty-app", "nobody@example.test") == 550

    verdict = sink.verdict("hasty-app")
    assert verdict["verdict"] == "fail", verdict
    assert results(verdict)["retry_4xx_min_interval"] == "fail", verdict
    assert results(verdict)["resent_after_5xx"] == "fail", verdict
