//! A test hook that makes the blaster panic on purpose, so the tests can
//! prove that a panic never loses a run (report written, exit code 4). Set
//! `MAILSTORM_BLAST_INJECT_PANIC=shard-N` to make shard N panic as it
//! starts, or `=progress` to panic on the main thread at the first progress
//! report; nothing else reads it.

/// The environment variable the hook reads.
pub const VAR: &str = "MAILSTORM_BLAST_INJECT_PANIC";

/// Panics when the hook names this shard (read once per shard start, off
/// the hot path).
pub(crate) fn maybe_panic_shard(index: usize) {
    if std::env::var(VAR).is_ok_and(|v| v == format!("shard-{index}")) {
        panic!("injected panic ({VAR}=shard-{index})");
    }
}

/// Panics when the hook asks for a panic on the main thread while a run
/// reports progress.
pub fn maybe_panic_in_progress() {
    if std::env::var(VAR).is_ok_and(|v| v == "progress") {
        panic!("injected panic ({VAR}=progress)");
    }
}
