//! What the referee learns about a session ([`Report`]) and how it is
//! handed to the hook when the session ends.

use super::Session;

/// What the referee learns at the end of a session.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// The hook asked for [`crate::hook::StageHook::session_closed`].
    pub(crate) tracked: bool,
    pub(crate) opened: bool,
    pub(crate) messages: u64,
    pub(crate) pipelined: bool,
    pub(crate) bdat: bool,
    pub(crate) commands_after_421: u32,
    pub(crate) quit_after_421: bool,
    /// A hook's 421 went out (later input is a client violation).
    pub(crate) sent_421: bool,
    /// When the session started (for the referee's reconnect times).
    pub(crate) connected: Option<std::time::Instant>,
    /// The first greeting's argument (tracked sessions only).
    pub(crate) helo: Option<String>,
    pub(crate) mails: u32,
    pub(crate) size_violations: u32,
    pub(crate) unannounced_tested: bool,
    pub(crate) pipelined_unannounced: bool,
    pub(crate) quit: bool,
}

impl Session {
    /// Tells the hook the session ended, if it asked to know;
    /// `client_closed`: the client closed the connection.
    pub(crate) fn report_end(&mut self, client_closed: bool) {
        let (Some(h), true) = (&self.s.hook, self.report.tracked) else {
            return;
        };
        let mut end = crate::hook::SessionEnd::new(self.id, self.peer);
        end.messages = self.report.messages;
        end.pipelined = self.report.pipelined;
        end.bdat = self.report.bdat;
        end.commands_after_421 = self.report.commands_after_421;
        end.quit_after_421 = self.report.quit_after_421;
        end.helo = self.report.helo.take();
        end.mails = self.report.mails;
        end.size_violations = self.report.size_violations;
        end.pipelining_unannounced_tested = self.report.unannounced_tested;
        end.pipelined_unannounced = self.report.pipelined_unannounced;
        end.quit = self.report.quit;
        end.client_closed = client_closed && !self.report.quit;
        h.session_closed(&end);
    }
}
