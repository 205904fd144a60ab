//! An IP address's text without allocating: what key hashing and the
//! referee's per-client keys feed for every watched command.

use std::net::IpAddr;

/// An IP address's text (`Display`) in a stack buffer: what key hashing
/// feeds without allocating.
pub(crate) struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    /// The canonical form of `ip` (IPv4-mapped IPv6 as IPv4), as displayed.
    pub(crate) fn new(ip: IpAddr) -> IpText {
        use std::fmt::Write as _;
        let mut t = IpText {
            buf: [0; 48],
            len: 0,
        };
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                // Dotted decimal by hand: the formatter is slow for this.
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        t.put(b'.');
                    }
                    if o >= 100 {
                        t.put(b'0' + o / 100);
                    }
                    if o >= 10 {
                        t.put(b'0' + o / 10 % 10);
                    }
                    t.put(b'0' + o % 10);
                }
            }
            v6 => {
                let _ = write!(t, "{v6}");
            }
        }
        t
    }

    fn put(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// The text's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_std_does_with_mapped_v4_as_v4() {
        let ip: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(IpText::new(ip).as_bytes(), b"10.0.0.1");
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.100.9.99",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }
}
