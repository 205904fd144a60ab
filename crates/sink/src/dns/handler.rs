//! Answers one query: ask the fault plan (stage dns), then answer from the
//! zone. The wire format is hickory's; this file only picks records.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Header, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use super::counts::{DnsCounts, Outcome};
use super::zone::{normalise, Zone};
use crate::hook::{Recipients, Stage, StageContext};
use crate::plan::model::DnsFault;
use crate::plan::{Engine, FaultAction};

/// Queries held by a plan's `delay` at once, UDP and TCP together. Each
/// costs ~2 KiB while held; without a cap a flood at a 60 s delay grew the
/// sink by 1.4 GB in 5 s. A delayed query past the cap is dropped
/// unanswered, as an overloaded server drops it, and counted as `shed`.
pub const MAX_HELD_DNS_QUERIES: usize = 4_096;

/// Clones share the zone, the plan, the counters and the held-query slots.
#[derive(Clone)]
pub(crate) struct Handler {
    pub(crate) zone: Arc<Zone>,
    pub(crate) engine: Option<Arc<Engine>>,
    pub(crate) counts: Arc<DnsCounts>,
    pub(crate) held: Arc<tokio::sync::Semaphore>,
}

/// The plan's decision for a query: an optional delay and fault.
fn decide(
    engine: &Engine,
    peer: SocketAddr,
    qname: &str,
    qtype: &str,
) -> (Option<std::time::Duration>, Option<DnsFault>) {
    let ctx = StageContext {
        stage: Stage::Dns,
        // No connection to speak of (UDP): rules at stage dns key on
        // `global` (or the client) by default.
        session_id: 0,
        peer,
        helo: None,
        sender: None,
        recipients: Recipients { buf: "", ends: &[] },
        rcpt: Some(qname),
        reverse_path: None,
        tls: false,
        auth_user: None,
        message_size: 0,
        message: None,
        command: qtype.as_bytes(),
        scope: None,
    };
    match engine.decide_at(&ctx, Instant::now()) {
        Some(v) => (
            v.delay,
            match v.outcome {
                FaultAction::Dns(f) => Some(f),
                _ => None,
            },
        ),
        None => (None, None),
    }
}

fn records(zone: &Zone, qname: &str, qtype: RecordType, owner: &Name) -> Option<Vec<Record>> {
    let n = zone.get(qname)?;
    let mut out = Vec::new();
    let add_addresses = |out: &mut Vec<Record>, v4: bool| {
        for ip in &n.addresses {
            let rdata = match (ip, v4) {
                (IpAddr::V4(a), true) => RData::A(A::from(*a)),
                (IpAddr::V6(a), false) => RData::AAAA(AAAA::from(*a)),
                _ => continue,
            };
            out.push(Record::from_rdata(owner.clone(), n.ttl, rdata));
        }
    };
    match qtype {
        RecordType::MX => {
            for (pref, host) in &n.mx {
                let exchange = if host == "." {
                    Name::root()
                } else {
                    Name::from_ascii(format!("{host}.")).unwrap_or_else(|_| Name::root())
                };
                out.push(Record::from_rdata(
                    owner.clone(),
                    n.ttl,
                    RData::MX(MX::new(*pref, exchange)),
                ));
            }
        }
        RecordType::A => add_addresses(&mut out, true),
        RecordType::AAAA => add_addresses(&mut out, false),
        RecordType::ANY => {
            add_addresses(&mut out, true);
            add_addresses(&mut out, false);
        }
        _ => {}
    }
    Some(out)
}

impl Handler {
    /// Counts how a query from `peer` was handled: in the responder's
    /// totals and in the referee's entry for the client's IP.
    fn outcome(&self, peer: IpAddr, o: Outcome) {
        self.counts.outcome(o);
        if let Some(e) = &self.engine {
            e.dns_query(peer, |r| o.tally(r));
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let tcp = request.protocol() == Protocol::Tcp;
        let peer = request.src().ip();
        self.counts.query(peer, tcp);
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            self.outcome(peer, Outcome::Malformed);
            header.set_response_code(ResponseCode::FormErr);
            let resp = builder.error_msg(request.header(), ResponseCode::FormErr);
            return response_handle
                .send_response(resp)
                .await
                .unwrap_or_else(|_| header.into());
        };
        let owner: Name = info.query.name().into();
        let qname = normalise(&owner.to_ascii());
        let qtype = info.query.query_type();
        let (delay, fault) = match &self.engine {
            Some(e) => decide(e, request.src(), &qname, &qtype.to_string()),
            None => (None, None),
        };
        if let Some(d) = delay {
            let Ok(_slot) = self.held.try_acquire() else {
                self.counts.shed();
                self.outcome(peer, Outcome::NoAnswer);
                return header.into();
            };
            self.counts.delayed();
            tokio::time::sleep(d).await;
        }
        let answers = match fault {
            Some(DnsFault::NoAnswer) => {
                self.outcome(peer, Outcome::NoAnswer);
                return header.into();
            }
            Some(DnsFault::Servfail) => {
                self.outcome(peer, Outcome::Servfail);
                header.set_response_code(ResponseCode::ServFail);
                Vec::new()
            }
            Some(DnsFault::Nxdomain) => {
                self.outcome(peer, Outcome::Nxdomain);
                header.set_response_code(ResponseCode::NXDomain);
                Vec::new()
            }
            // Over TCP the client already did what truncation asks for.
            Some(DnsFault::Truncate) if !tcp => {
                self.outcome(peer, Outcome::Truncated);
                header.set_truncated(true);
                Vec::new()
            }
            _ => match records(&self.zone, &qname, qtype, &owner) {
                Some(r) => {
                    self.outcome(peer, Outcome::Answered);
                    r
                }
                None => {
                    self.outcome(peer, Outcome::Nxdomain);
                    header.set_response_code(ResponseCode::NXDomain);
                    Vec::new()
                }
            },
        };
        let resp = builder.build(header, answers.iter(), &[], &[], &[]);
        match response_handle.send_response(resp).await {
            Ok(info) => info,
            Err(_) => header.into(),
        }
    }
}
