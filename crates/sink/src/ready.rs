//! The ready signal: once every listener is bound and accepting, one JSON
//! object ([`ReadyInfo`]) followed by a newline, written to a file
//! (atomically: a temporary file in the same directory, then a rename) or
//! to an inherited file descriptor. A test harness starts the sink with
//! port 0 everywhere and reads where it is; `GET /info` serves the same
//! object.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the sink listens: the ready file's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// The sink's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
    /// The plain SMTP/LMTP listeners, with their real ports.
    pub smtp: Vec<SocketAddr>,
    /// The implicit-TLS listeners.
    pub tls: Vec<SocketAddr>,
    /// The control API, when it runs.
    pub control: Option<SocketAddr>,
    /// The DNS responder (`--dns`), `null` without it.
    pub dns: Option<SocketAddr>,
    /// The host name in the greeting.
    pub hostname: String,
}

impl ReadyInfo {
    /// The object as one line of JSON with its newline.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Why the ready signal cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadyError {
    /// The ready file's directory is missing or not writable.
    #[error("cannot write the ready file {path}: {source}")]
    File {
        /// The ready file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The descriptor is not open for writing.
    #[error("cannot write the ready signal to file descriptor {fd}: {source}")]
    Fd {
        /// The descriptor.
        fd: i32,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A ready file, checked before serving so a bad path fails at start.
#[derive(Debug)]
pub struct ReadyFile {
    path: PathBuf,
    tmp: PathBuf,
}

impl ReadyFile {
    /// Checks that `path` can be written: creates (and keeps, empty) its
    /// temporary file in the same directory. The error names `path`.
    pub fn prepare(path: &Path) -> Result<ReadyFile, ReadyError> {
        let err = |source| ReadyError::File {
            path: path.to_path_buf(),
            source,
        };
        let name = path.file_name().ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file name",
            ))
        })?;
        if path.is_dir() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a directory",
            )));
        }
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        std::fs::File::create(&tmp).map_err(err)?;
        Ok(ReadyFile {
            path: path.to_path_buf(),
            tmp,
        })
    }

    /// Writes `info` to the temporary file and renames it to the ready
    /// file: a reader sees either no file or the whole object.
    pub fn write(self, info: &ReadyInfo) -> Result<(), ReadyError> {
        let err = |source| ReadyError::File {
            path: self.path.clone(),
            source,
        };
        std::fs::write(&self.tmp, info.to_line())
            .and_then(|()| std::fs::rename(&self.tmp, &self.path))
            .map_err(err)
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        // Not written (the sink failed to start): leave nothing behind.
        // After the rename the temporary file is gone already.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// An inherited descriptor for the ready signal (`--ready-fd N`), opened
/// through `/proc/self/fd` before serving.
#[derive(Debug)]
pub struct ReadyFd {
    fd: i32,
    file: std::fs::File,
}

impl ReadyFd {
    /// Opens descriptor `fd` for writing; the error names it.
    pub fn prepare(fd: i32) -> Result<ReadyFd, ReadyError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .map_err(|source| ReadyError::Fd { fd, source })?;
        Ok(ReadyFd { fd, file })
    }

    /// Writes the line and closes this handle on the descriptor.
    pub fn write(mut self, info: &ReadyInfo) -> Result<(), ReadyError> {
        let fd = self.fd;
        self.file
            .write_all(info.to_line().as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| ReadyError::Fd { fd, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_is_whole_or_absent_and_bad_paths_are_named() {
        let dir = std::env::temp_dir().join(format!("ms-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ready.json");
        let f = ReadyFile::prepare(&path).unwrap();
        assert!(!path.exists(), "not before write");
        let info = ReadyInfo {
            version: "0.1.0".into(),
            pid: 1,
            smtp: vec!["127.0.0.1:1".parse().unwrap()],
            tls: vec![],
            control: None,
            dns: None,
            hostname: "h".into(),
        };
        f.write(&info).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
        assert_eq!(serde_json::from_str::<ReadyInfo>(&text).unwrap(), info);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp left");
        let bad = dir.join("missing").join("ready.json");
        let e = ReadyFile::prepare(&bad).unwrap_err().to_string();
        assert!(e.contains(&bad.display().to_string()), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
