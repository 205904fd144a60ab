//! The authoritative zone: names with MX and address records, from a YAML
//! file (`--dns-zone`) or from defaults that point at the sink's own
//! listeners.
//!
//! ```yaml
//! ttl: 60s                       # default TTL of every record
//! names:
//!   example.test:
//!     mx:
//!       - {preference: 10, host: mx1.example.test}
//!       - {preference: 20, host: mx2.example.test}
//!   mx1.example.test: {addresses: [127.0.0.2]}
//!   mx2.example.test: {addresses: [127.0.0.3, "::1"], ttl: 5s}
//!   a-only.test: {addresses: [127.0.0.2]}   # no MX: the A record is the implicit MX
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Longest TTL a zone may give; keeps a typo (`60d`) from pinning a
/// resolver's cache for the rest of a test run.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A zone file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    /// Default TTL of every record (default 60s).
    #[serde(
        default = "default_ttl",
        with = "mailstorm_config::serde_units::duration"
    )]
    pub ttl: Duration,
    /// The names the zone answers for (case-insensitive, without the final dot).
    #[serde(default)]
    pub names: BTreeMap<String, NameSpec>,
}

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}

/// The records of one name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameSpec {
    /// MX records (RFC 5321 §5.1: lower preference first). A host of `.`
    /// is a null MX (RFC 7505: the domain accepts no mail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx: Vec<MxSpec>,
    /// A and AAAA records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// TTL of this name's records (default: the zone's).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "mailstorm_config::serde_units::opt_duration"
    )]
    pub ttl: Option<Duration>,
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MxSpec {
    /// Preference (lower is tried first).
    pub preference: u16,
    /// The mail exchanger's host name.
    pub host: String,
}

/// A checked zone: lower-case names without the final dot.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub(crate) names: BTreeMap<String, ZoneName>,
}

/// The records of one name, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ZoneName {
    pub(crate) mx: Vec<(u16, String)>,
    pub(crate) addresses: Vec<IpAddr>,
    pub(crate) ttl: u32,
}

/// `Example.TEST.` → `example.test`.
pub(crate) fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A content error in a zone: the key path of the offending value (or
/// name) and what is wrong with it.
#[derive(Debug)]
struct Bad {
    path: Vec<Part>,
    /// The error is about the last key itself (a name), not its value.
    on_key: bool,
    message: String,
}

#[derive(Debug)]
enum Part {
    Key(String),
    Index(usize),
}

impl Bad {
    fn at(path: Vec<Part>, message: String) -> Bad {
        Bad {
            path,
            on_key: false,
            message,
        }
    }

    /// About name `raw` itself.
    fn name(raw: &str, message: String) -> Bad {
        Bad {
            path: vec![Part::Key("names".into()), Part::Key(raw.into())],
            on_key: true,
            message,
        }
    }

    /// `names.example.test.mx[0].host`.
    fn path_text(&self) -> String {
        let mut out = String::new();
        for p in &self.path {
            match p {
                Part::Key(k) if out.is_empty() => out.push_str(k),
                Part::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Part::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// The line and column of the offending value (or name) in `text`.
    fn locate(&self, text: &str) -> Option<(usize, usize)> {
        use mailstorm_config::yaml::Seg;
        let last = self.path.len().saturating_sub(1);
        let segs: Vec<Seg<'_>> = self
            .path
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Part::Key(k) if self.on_key && i == last => Seg::KeyName(k),
                Part::Key(k) => Seg::Key(k),
                Part::Index(n) => Seg::Index(*n),
            })
            .collect();
        mailstorm_config::yaml::locate(text, &segs)
    }
}

/// `names.RAW.mx[I].host`.
fn mx_host(raw: &str, i: usize) -> Vec<Part> {
    vec![
        Part::Key("names".into()),
        Part::Key(raw.into()),
        Part::Key("mx".into()),
        Part::Index(i),
        Part::Key("host".into()),
    ]
}

impl Zone {
    /// Parses a zone file's text; errors, in its shape or content, name
    /// `origin:line:col` and the key path (`names.example.test.mx[0].host`).
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Zone, ConfigError> {
        let spec: ZoneSpec = mailstorm_config::from_yaml_str(text, &origin.display().to_string())
            .map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            location: e.location,
            message: if e.path.is_empty() {
                e.message
            } else {
                format!("{}: {}", e.path, e.message)
            },
        })?;
        // Content checks run on the parsed zone (an MX host may be given
        // after the domain); the offending value is then found in the
        // text to name its line and column.
        Zone::check_spec(spec).map_err(|bad| ConfigError::Parse {
            path: origin.to_path_buf(),
            location: bad.locate(text),
            message: format!("{}: {}", bad.path_text(), bad.message),
        })
    }

    /// Reads and parses a zone file.
    pub fn from_yaml_file(path: &Path) -> Result<Zone, ConfigError> {
        let text =
            mailstorm_config::read_config_file(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        Zone::from_yaml_str(&text, path)
    }

    /// Checks names, TTLs and that every MX host has an address in the
    /// zone (a dangling MX would only show up as a confusing
    /// resolution failure in the blaster). The error is `path: message`.
    pub fn check(spec: ZoneSpec) -> Result<Zone, String> {
        Zone::check_spec(spec).map_err(|b| format!("{}: {}", b.path_text(), b.message))
    }

    fn check_spec(spec: ZoneSpec) -> Result<Zone, Bad> {
        let ttl_of = |t: Duration, at: Vec<Part>| -> Result<u32, Bad> {
            if t > MAX_TTL {
                return Err(Bad::at(
                    at,
                    format!("TTL {t:?} is longer than the 7-day maximum"),
                ));
            }
            Ok(t.as_secs() as u32)
        };
        let default_ttl = ttl_of(spec.ttl, vec![Part::Key("ttl".into())])?;
        let mut names = BTreeMap::new();
        for (raw, n) in &spec.names {
            let name = normalise(raw);
            if !valid_name(&name) {
                return Err(Bad::name(
                    raw,
                    format!("{raw:?} is not a valid domain name"),
                ));
            }
            if n.mx.is_empty() && n.addresses.is_empty() {
                return Err(Bad::name(raw, "no `mx` and no `addresses`".into()));
            }
            let ttl = match n.ttl {
                Some(t) => {
                    let at = vec![
                        Part::Key("names".into()),
                        Part::Key(raw.clone()),
                        Part::Key("ttl".into()),
                    ];
                    ttl_of(t, at)?
                }
                None => default_ttl,
            };
            let mut mx = Vec::new();
            for (i, m) in n.mx.iter().enumerate() {
                let host = normalise(&m.host);
                if m.host != "." && !valid_name(&host) {
                    return Err(Bad::at(
                        mx_host(raw, i),
                        format!("{:?} is not a valid host name", m.host),
                    ));
                }
                mx.push((m.preference, host));
            }
            if names
                .insert(
                    name.clone(),
                    ZoneName {
                        mx,
                        addresses: n.addresses.clone(),
                        ttl,
                    },
                )
                .is_some()
            {
                return Err(Bad::name(
                    raw,
                    format!("{name} is given twice (names are case-insensitive)"),
                ));
            }
        }
        for (raw, n) in &spec.names {
            for (i, m) in n.mx.iter().enumerate() {
                let host = normalise(&m.host);
                if m.host != "." && names.get(&host).is_none_or(|h| h.addresses.is_empty()) {
                    return Err(Bad::at(
                        mx_host(raw, i),
                        format!("{} has no `addresses` in the zone", m.host),
                    ));
                }
            }
        }
        Ok(Zone { names })
    }

    /// The default zone: `domain` with one MX per distinct listener IP
    /// (`mx1.DOMAIN` at preference 10, `mx2.DOMAIN` at 20, ...), each with
    /// that IP as its address. Several `--listen` addresses on 127.0.0.2,
    /// 127.0.0.3 ... stand for several MX hosts.
    pub fn defaults(domain: &str, listeners: &[SocketAddr]) -> Zone {
        let domain = normalise(domain);
        let mut ips: Vec<IpAddr> = Vec::new();
        for a in listeners {
            if !ips.contains(&a.ip()) {
                ips.push(a.ip());
            }
        }
        let mut names = BTreeMap::new();
        let mut mx = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let host = format!("mx{}.{domain}", i + 1);
            mx.push((10 * (i as u16 + 1), host.clone()));
            names.insert(
                host,
                ZoneName {
                    mx: Vec::new(),
                    addresses: vec![*ip],
                    ttl: 60,
                },
            );
        }
        names.insert(
            domain,
            ZoneName {
                mx,
                addresses: Vec::new(),
                ttl: 60,
            },
        );
        Zone { names }
    }

    /// The records of `name` (already normalised).
    pub(crate) fn get(&self, name: &str) -> Option<&ZoneName> {
        self.names.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Zone, String> {
        Zone::from_yaml_str(y, Path::new("zone.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse("names:\n  example.test:\n    mx:\n      - {preference: x, host: a}\n")
            .unwrap_err();
        assert!(e.starts_with("zone.yaml:4:"), "{e}");
        assert!(e.contains("preference"), "{e}");
        let e = parse("names:\n  example.test:\n    mxx: []\n").unwrap_err();
        assert!(e.contains("zone.yaml:3:") && e.contains("mxx"), "{e}");
        let e =
            parse("names:\n  example.test:\n    mx: [{preference: 1, host: mx.example.test}]\n")
                .unwrap_err();
        assert!(
            e.contains("names.example.test.mx[0].host") && e.contains("no `addresses`"),
            "{e}"
        );
        let e = parse("ttl: 30d\nnames: {a.test: {addresses: [127.0.0.1]}}\n").unwrap_err();
        assert!(e.contains("ttl") && e.contains("7-day"), "{e}");
    }

    /// Content errors (found once the zone is parsed) name the line and
    /// column of the offending value, or of the name when the name is wrong.
    #[test]
    fn content_errors_name_line_and_column() {
        let cases: [(&str, &str); 7] = [
            (
                "names:\n  example.test:\n    mx:\n      - {preference: 10, host: mx1.example.test}\n      - {preference: 20, host: mx9.example.test}\n  mx1.example.test: {addresses: [127.0.0.2]}\n",
                "zone.yaml:5:32: names.example.test.mx[1].host: mx9.example.test has no `addresses` in the zone",
            ),
            (
                "ttl: 30d\nnames: {a.test: {addresses: [127.0.0.1]}}\n",
                "zone.yaml:1:6: ttl: TTL 2592000s is longer than the 7-day maximum",
            ),
            (
                "names:\n  a.test:\n    addresses: [127.0.0.1]\n    ttl: 8d\n",
                "zone.yaml:4:10: names.a.test.ttl: TTL 691200s is longer than the 7-day maximum",
            ),
            (
                "names:\n  ok.test: {addresses: [127.0.0.1]}\n  a.test: {}\n",
                "zone.yaml:3:3: names.a.test: no `mx` and no `addresses`",
            ),
            (
                "names:\n  ok.test: {addresses: [127.0.0.1]}\n  \"bad name\": {addresses: [127.0.0.1]}\n",
                "zone.yaml:3:3: names.bad name: \"bad name\" is not a valid domain name",
            ),
            (
                "names:\n  a.test:\n    mx:\n      - preference: 1\n        host: \"no host!\"\n",
                "zone.yaml:5:15: names.a.test.mx[0].host: \"no host!\" is not a valid host name",
            ),
            (
                "names:\n  a.test: {addresses: [127.0.0.1]}\n  A.test: {addresses: [127.0.0.2]}\n",
                "zone.yaml:2:3: names.a.test: a.test is given twice (names are case-insensitive)",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(parse(yaml).unwrap_err(), want, "{yaml}");
        }
    }

    #[test]
    fn defaults_point_at_listeners() {
        let z = Zone::defaults(
            "Example.Test.",
            &[
                "127.0.0.2:25".parse().unwrap(),
                "127.0.0.3:25".parse().unwrap(),
                "127.0.0.3:26".parse().unwrap(),
            ],
        );
        let d = z.get("example.test").unwrap();
        assert_eq!(
            d.mx,
            vec![
                (10, "mx1.example.test".into()),
                (20, "mx2.example.test".into())
            ]
        );
        assert_eq!(
            z.get("mx2.example.test").unwrap().addresses,
            vec!["127.0.0.3".parse::<IpAddr>().unwrap()]
        );
    }
}
