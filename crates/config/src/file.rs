//! Reading a file the user named, bounded. A path to a device
//! (`/dev/zero`), a pipe or a stray multi-gigabyte file must not take the
//! process's memory: the read stops one byte past the limit and fails,
//! whatever the file's size claims to be (devices and pipes claim 0).

use std::io::{self, Read};
use std::path::Path;

use crate::units::format_size;

/// The most bytes of a configuration file: a sink config, fault plan,
/// profile, scenario, DNS zone, user list or PEM file. Far above any real
/// one (a CA bundle is ~200 KiB).
pub const MAX_CONFIG_FILE_BYTES: u64 = 16 << 20;

/// Reads at most `limit` bytes of `path`; a longer file is an
/// [`io::ErrorKind::FileTooLarge`] error that says the limit.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "larger than {}, the most this file may hold",
                format_size(limit)
            ),
        ));
    }
    Ok(bytes)
}

/// A configuration file's text (sink config, plan, profile, scenario,
/// zone), at most [`MAX_CONFIG_FILE_BYTES`].
pub fn read_config_file(path: &Path) -> io::Result<String> {
    read_to_string_bounded(path, MAX_CONFIG_FILE_BYTES)
}

/// [`read_bounded`] for text: invalid UTF-8 is an
/// [`io::ErrorKind::InvalidData`] error, as [`std::fs::read_to_string`]
/// gives.
pub fn read_to_string_bounded(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_that_never_ends_stops_at_the_limit() {
        let e = read_bounded(Path::new("/dev/zero"), 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            e.to_string(),
            "larger than 4KiB, the most this file may hold"
        );
    }

    #[test]
    fn a_file_at_the_limit_is_read_whole() {
        let dir =
            std::env::temp_dir().join(format!("mailstorm-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.yaml");
        std::fs::write(&path, "a: 1\n").unwrap();
        assert_eq!(read_to_string_bounded(&path, 5).unwrap(), "a: 1\n");
        let e = read_to_string_bounded(&path, 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        std::fs::write(&path, b"\xff\n").unwrap();
        let e = read_to_string_bounded(&path, 5).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
