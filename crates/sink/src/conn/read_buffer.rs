//! The connection's one reusable read buffer.

use crate::settings::READ_INITIAL;

/// Input read but not yet consumed by the session. Grows (doubling,
/// bounded) while a body streams in and shrinks back once the connection
/// goes quiet, so idle connections hold little memory.
pub(super) struct ReadBuffer {
    pub(super) bytes: Vec<u8>,
    /// Octets read since the session last processed input.
    batch: usize,
    /// Octets the last batch of reads brought in (what the buffer is
    /// sized by: a pipelined batch read in several pieces counts whole).
    last_batch: usize,
    /// Whether the last read filled all the room it had.
    last_read_filled: bool,
}

/// Most input taken in one batch of reads before the session processes
/// it (a fraction of the read cap, at most this): a few pipelined command
/// groups, not a whole body.
const DRAIN_MAX: usize = 32 * 1024;

/// The buffer is full at its cap: the session failed to consume input.
pub(super) struct Overflow;

impl ReadBuffer {
    pub(super) fn new() -> ReadBuffer {
        ReadBuffer {
            bytes: Vec::with_capacity(READ_INITIAL),
            batch: 0,
            last_batch: 0,
            last_read_filled: false,
        }
    }

    /// Makes room for the next read and returns how much there is. Grows
    /// when the buffer is full or the last read filled all the room it
    /// had (1 KiB reads of a streaming body would cost a syscall per KiB);
    /// shrinks once a batch of reads comes in small with nothing pending.
    /// `grown` is called with the new capacity after growing.
    pub(super) fn make_room(
        &mut self,
        cap_limit: usize,
        grown: impl FnOnce(usize),
    ) -> Result<usize, Overflow> {
        let cap = self.bytes.capacity();
        if self.bytes.len() == cap || (self.last_read_filled && cap < cap_limit) {
            if self.bytes.len() == cap && cap >= cap_limit {
                // Every phase consumes a full buffer, so this cannot happen;
                // close rather than grow without bound.
                return Err(Overflow);
            }
            let want = (cap * 2).clamp(READ_INITIAL, cap_limit);
            self.bytes.reserve_exact(want - self.bytes.len());
            grown(self.bytes.capacity());
        } else if self.bytes.is_empty() && cap > 4 * READ_INITIAL && self.last_batch < cap / 8 {
            self.bytes.shrink_to(READ_INITIAL);
        }
        Ok(self.bytes.capacity() - self.bytes.len())
    }

    /// Records a read of `n` octets into `room`.
    pub(super) fn filled(&mut self, n: usize, room: usize) {
        self.batch += n;
        self.last_read_filled = n == room;
    }

    /// Whether to read again before processing: the last read filled its
    /// room, so more of the client's batch is likely waiting in the
    /// socket, and the buffer is still well short of `cap_limit` (so
    /// [`ReadBuffer::make_room`] cannot overflow).
    pub(super) fn more_waiting(&self, cap_limit: usize) -> bool {
        self.last_read_filled && self.bytes.len() < DRAIN_MAX.min(cap_limit / 2)
    }

    /// The reads of this batch are done: the session processes them next.
    pub(super) fn batch_done(&mut self) {
        self.last_batch = std::mem::take(&mut self.batch);
    }

    /// Drops the first `n` bytes, moving any partial command to the front.
    #[inline]
    pub(super) fn consume(&mut self, n: usize) {
        if n >= self.bytes.len() {
            self.bytes.clear();
        } else if n > 0 {
            self.bytes.drain(..n);
        }
    }
}
