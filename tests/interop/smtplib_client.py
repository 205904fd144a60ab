#!/usr/bin/env python3
"""Python smtplib as a real SMTP client, driven by tests/interop_sink.rs.

Sends one multi-recipient EmailMessage with send_message() to 127.0.0.1:PORT,
optionally after starttls() (no certificate verification: the sink's
certificate is self-signed) and login() (or one AUTH mechanism forced with
--mech). Prints one JSON line with the outcome; exit status 0 when the
message was accepted, 3 when AUTH was refused, 4 on any other SMTP error.
"""

import argparse
import json
import smtplib
import ssl
import sys
from email.message import EmailMessage

RECIPIENTS = {
    "To": "Ann Example <ann@sink.test>, bob@sink.test",
    "Cc": "carol@sink.test",
    # send_message() puts Bcc recipients in the envelope and drops the header.
    "Bcc": "dave@sink.test",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--marker", required=True, help="text to put in the subject and body")
    ap.add_argument("--starttls", action="store_true")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--mech", help="force one AUTH mechanism: PLAIN, LOGIN or CRAM-MD5")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()

    msg = EmailMessage()
    msg["From"] = "Python Sender <py-sender@client.test>"
    for name, value in RECIPIENTS.items():
        msg[name] = value
    msg["Subject"] = f"smtplib {args.marker}"
    msg.set_content(
        f"Hello from smtplib.\n{args.marker}\n.a line that starts with a dot\n"
    )

    out = {"starttls": False, "auth": None}
    try:
        with smtplib.SMTP(
            "127.0.0.1", args.port, local_hostname="smtplib.test", timeout=args.timeout
        ) as s:
            s.ehlo()
            out["esmtp_features"] = sorted(s.esmtp_features)
            if args.starttls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                code, _ = s.starttls(context=ctx)
                out["starttls"] = code == 220
                out["tls_version"] = s.sock.version()
                s.ehlo()
            if args.user is not None:
                try:
                    if args.mech:
                        s.user, s.password = args.user, args.password
                        method = getattr(s, "auth_" + args.mech.lower().replace("-", "_"))
                        s.auth(args.mech, method)
                        out["auth"] = args.mech
                    else:
                        s.login(args.user, args.password)
                        out["auth"] = "login()"
                except smtplib.SMTPAuthenticationError as e:
                    out["auth_error"] = [e.smtp_code, e.smtp_error.decode("utf-8", "replace")]
                    print(json.dumps(out))
                    return 3
            refused = s.send_message(msg)
            out["refused"] = refused
            out["sent"] = True
    except smtplib.SMTPException as e:
        out["error"] = repr(e)
        print(json.dumps(out))
        return 4
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
