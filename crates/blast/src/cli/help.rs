//! The long `--help` text printed after the flag list: the run modes
//! (capacity, load stages, shards, policies, scenarios), exit codes and
//! examples.

/// The text after the flag list in `mailstorm-blast --help`.
pub(super) const AFTER_HELP: &str = "\
Capacity search: `mailstorm-blast capacity [FLAGS]` finds the highest rate
the target sustains within an SLA (see `mailstorm-blast capacity --help`).

Without --target, an in-process mailstorm sink is started on 127.0.0.1 and
blasted for a short default run (5 s or 20,000 messages), then a report is
printed. Targets outside loopback need --allow-remote.

Load stages (--stages): each stage is DURATION:VALUE (a step) or
DURATION:FROM..TO (a linear ramp); the run lasts their sum (--messages may
still end it earlier). With --stages-mode rate the values are messages/s on
an open-loop schedule (--concurrency caps the connections); with
--stages-mode concurrency they are connections sending back to back
(--concurrency is then taken from the stages). Without --stages-mode, giving
--concurrency selects concurrency, otherwise rate. The report and summary
count messages per stage (by intended start).

Sharded runs: `--shard I/N --run-id RUN` (or JOB_COMPLETION_INDEX with
--shards N) makes this process shard I of N forming one run: it takes
sends, connections and messages ≡ I (mod N) of the whole run's schedule,
its own trace sequence space, the run's seed; `--start-at TIME` starts
every shard together. `mailstorm-blast merge PARTS… --report run.json`
merges their reports exactly (see `mailstorm-blast merge --help`).

Resilience policies (profile `policy:` section, see configs/scenarios/):
retries with max_attempts, backoff (fixed, exponential, Postfix's age-based)
and seeded jitter, a retry budget, a circuit breaker, Postfix-style
concurrency feedback, per-stage timeouts; `preset: postfix` for Postfix's
defaults. --time-scale 0.01 replays a 300 s backoff in 3 s. Failure scope:
421 or a failed greeting/EHLO closes the connection (reconnect after
backoff); MAIL/DATA 4xx defer the message; RCPT 4xx defers that recipient;
5xx is permanent and never retried.

Scenarios (--scenario FILE...): the scenario's profile against the
embedded sink with its fault plan, or against the relay it names
(`target:`; `downstream:` is the sink behind it, which gets the plan and
whose ledger is joined), then every expectation (`delivered == 1000`,
`attempts.p99 <= 3`, `breaker.opened >= 1`, `lost == 0`, `e2e_p99 < 30s`)
printed with its measured value. Only --threads, --no-pin, --seed,
--time-scale, --report, --html, --junit and --quiet apply; any other run
flag is refused (exit 2): put it in the scenario file.

Exit codes:
  0  run completed and passed
  1  run failed, each reason printed: a --threshold check or scenario
     expectation failed; or, without --threshold, no message was accepted
     or the target stopped answering (the last 2+ intervals, 1 s or more,
     had only transport errors and no reply while messages were still
     being started); or, always, more than 1% of the open-loop sends
     never started (connections busy: raise -c); or --abort-on-fail
     stopped the run
  2  usage or configuration error (including a --report/--timeline/--html
     path that cannot be written, checked before the run, and a --start-at
     too far ahead or past); `merge` refusing a part (another run or
     schema version, a duplicated or missing shard), naming the file
  3  target unreachable (resolution or first connection failed, or no
     connection could be opened during the run)
  4  internal error (a bug): the report and timeline hold what was
     measured, the error is printed
  5  interrupted by SIGINT or SIGTERM: in-flight messages got the grace
     period, outputs written, the report says interrupted: true
  130  a second SIGINT/SIGTERM: exited at once, nothing written

Examples:
  mailstorm-blast
  mailstorm-blast --target 127.0.0.1:2525 -c 50 -d 10s --report out.json
  mailstorm-blast --target 127.0.0.1:2525 --rate 200 -d 30s --threshold 'p99<50ms,5xx==0'
  mailstorm-blast --target 127.0.0.1:2525 --stages 10s:100,30s:100..500,10s:0
  mailstorm-blast --target 127.0.0.1:2525 -c 10 --stages 5s:10,10s:10..200 --pipeline-depth 8
  mailstorm-blast --target mx.test:587 --allow-remote --starttls required --ca ca.pem \\
      --auth user:secret --auth-mech cram-md5 -n 100";
