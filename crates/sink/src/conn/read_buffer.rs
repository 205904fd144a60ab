//! The connection's one reusable read buffer.

use crate::settings::READ_INITIAL;

/// Input read but not yet consumed by the session. Grows (doubling,
/// bounded) while a body streams in and shrinks back once the connection
/// goes quiet, so idle connections hold little memory.
pub(super) struct ReadBuffer {
    pub(super) bytes: Vec<u8>,
    /// Size of the last read.
    last_read: usize,
    /// Whether the last read filled all the room it had.
    last_read_filled: bool,
}

/// The buffer is full at its cap: the session failed to consume input.
pub(super) struct Overflow;

impl ReadBuffer {
    pub(super) fn new() -> ReadBuffer {
        ReadBuffer {
            bytes: Vec::with_capacity(READ_INITIAL),
            last_read: 0,
            last_read_filled: false,
        }
    }

    /// Makes room for the next read and returns how much there is. Grows
    /// when the buffer is full or the last read filled all the room it
    /// had (1 KiB reads of a streaming body would cost a syscall per KiB);
    /// shrinks once a read comes in small with nothing pending.
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
        } else if self.bytes.is_empty() && cap > 4 * READ_INITIAL && self.last_read < cap / 8 {
            self.bytes.shrink_to(READ_INITIAL);
        }
        Ok(self.bytes.capacity() - self.bytes.len())
    }

    /// Records a read of `n` octets into `room`.
    pub(super) fn filled(&mut self, n: usize, room: usize) {
        self.last_read = n;
        self.last_read_filled = n == room;
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
