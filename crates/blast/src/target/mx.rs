//! RFC 5321 §5.1: the hosts to try for a domain, in order. Lower MX
//! preference first, random order among equal preferences; a domain with
//! no MX record is its own implicit MX (preference 0); an MX of "."
//! (RFC 7505) means the domain takes no mail.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use super::dns::{Answer, Dns, DnsFailure};

thread_local! {
    /// Shuffle state for equal preferences (per shard; seeded per thread).
    static SHUFFLE: Cell<u64> = Cell::new(std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15);
}

fn random() -> u64 {
    SHUFFLE.with(|s| {
        let mut x = s.get();
        let r = mailstorm_sample::rng::splitmix64(&mut x);
        s.set(x);
        r
    })
}

/// Why a domain gave no address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MxError {
    /// A lookup failed.
    Dns(DnsFailure),
    /// RFC 7505 null MX, or MX hosts without addresses.
    NoHost(String),
}

/// Orders MX records: by preference, shuffled among equals.
pub(crate) fn order(mut mx: Vec<(u16, String)>) -> Vec<String> {
    let mut keyed: Vec<(u16, u64, String)> = mx.drain(..).map(|(p, h)| (p, random(), h)).collect();
    keyed.sort();
    keyed.into_iter().map(|(_, _, h)| h).collect()
}

/// The addresses to try for `domain`, best first, each on `port`.
/// `spent` receives the time of each lookup that went to the wire.
pub(crate) async fn candidates(
    dns: &Dns,
    domain: &str,
    port: u16,
    spent: &mut impl FnMut(Duration),
) -> Result<Vec<SocketAddr>, MxError> {
    let (mx, t) = dns.lookup(domain, RecordType::MX).await;
    spent(t);
    let hosts = match mx.map_err(MxError::Dns)? {
        Answer::Mx(m) if !m.is_empty() => {
            if m.iter().any(|(_, h)| h.is_empty()) {
                return Err(MxError::NoHost(format!(
                    "{domain} has a null MX (RFC 7505): it accepts no mail"
                )));
            }
            order(m)
        }
        // NODATA: the domain is its own mail exchanger.
        _ => vec![domain.to_string()],
    };
    let mut out = Vec::new();
    let mut last = None;
    for h in &hosts {
        for rtype in [RecordType::A, RecordType::AAAA] {
            let (r, t) = dns.lookup(h, rtype).await;
            spent(t);
            match r {
                Ok(Answer::Ips(ips)) if !ips.is_empty() => {
                    out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
                    break;
                }
                Ok(_) => {}
                Err(f) => last = Some(f),
            }
        }
    }
    if out.is_empty() {
        return Err(match last {
            Some(f) => MxError::Dns(f),
            None => MxError::NoHost(format!(
                "no MX host of {domain} has an address ({})",
                hosts.join(", ")
            )),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_first_equal_ones_shuffled() {
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..64 {
            let o = order(vec![
                (20, "c".into()),
                (10, "a".into()),
                (10, "b".into()),
                (5, "z".into()),
            ]);
            assert_eq!(o[0], "z");
            assert_eq!(o[3], "c");
            seen_first.insert(o[1].clone());
        }
        assert_eq!(
            seen_first.len(),
            2,
            "equal preferences are tried in random order"
        );
    }
}
