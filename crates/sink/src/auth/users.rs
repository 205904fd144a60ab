//! The `--auth-users` file: `user:password` lines loaded into a table the
//! SASL exchanges check credentials against.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use mailstorm_proto::sasl::constant_time_eq;

/// Why a user table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read users file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:password`.
    #[error("{}:{line}: {reason} (expected `user:password`)", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same user appears twice.
    #[error("{}:{line}: user {user:?} already defined on line {first_line}", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the repeat.
        line: usize,
        /// 1-based line number of the first definition.
        first_line: usize,
        /// The user name.
        user: String,
    },
}

/// A table of users and passwords (`--auth-users FILE`).
#[derive(Clone, Default)]
pub struct Users {
    passwords: HashMap<String, String>,
}

impl fmt::Debug for Users {
    // Never print passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.passwords.len())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Loads a file of `user:password` lines. The user name ends at the first
    /// `:`; the password is the rest of the line verbatim (it may contain `:`
    /// and spaces; a trailing CR is dropped). Blank lines and lines starting
    /// with `#` (after leading whitespace) are ignored. User names must be
    /// non-empty and free of whitespace and control characters; passwords must be
    /// non-empty and free of control characters.
    pub fn load(path: &Path) -> Result<Users, AuthError> {
        let limit = mailstorm_config::MAX_CONFIG_FILE_BYTES;
        let bytes =
            mailstorm_config::read_bounded(path, limit).map_err(|source| AuthError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        Self::parse(&bytes, path)
    }

    /// Parses the file format of [`Users::load`]; `path` is only used in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Users, AuthError> {
        let malformed = |line, reason| AuthError::Malformed {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut passwords = HashMap::new();
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        for (idx, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = idx + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text = std::str::from_utf8(raw).map_err(|_| malformed(line_no, "not UTF-8"))?;
            let trimmed = text.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (user, pass) = text
                .split_once(':')
                .ok_or_else(|| malformed(line_no, "no `:` separator"))?;
            if user.is_empty() {
                return Err(malformed(line_no, "empty user name"));
            }
            if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(malformed(
                    line_no,
                    "whitespace or control character in user name",
                ));
            }
            if pass.is_empty() {
                return Err(malformed(line_no, "empty password"));
            }
            if pass.chars().any(char::is_control) {
                return Err(malformed(line_no, "control character in password"));
            }
            if let Some(&first_line) = first_seen.get(user) {
                return Err(AuthError::Duplicate {
                    path: path.to_path_buf(),
                    line: line_no,
                    first_line,
                    user: user.to_owned(),
                });
            }
            first_seen.insert(user.to_owned(), line_no);
            passwords.insert(user.to_owned(), pass.to_owned());
        }
        Ok(Users { passwords })
    }

    /// Builds a table from `(user, password)` pairs (later pairs win).
    pub fn from_pairs<I, U, P>(pairs: I) -> Users
    where
        I: IntoIterator<Item = (U, P)>,
        U: Into<String>,
        P: Into<String>,
    {
        Users {
            passwords: pairs
                .into_iter()
                .map(|(u, p)| (u.into(), p.into()))
                .collect(),
        }
    }

    /// True when `user` exists and `pass` is its password. The password
    /// comparison does not stop at the first differing byte.
    pub fn check(&self, user: &str, pass: &str) -> bool {
        self.password(user)
            .is_some_and(|p| constant_time_eq(p.as_bytes(), pass.as_bytes()))
    }

    /// The password of `user`, if any.
    pub fn password(&self, user: &str) -> Option<&str> {
        self.passwords.get(user).map(String::as_str)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.passwords.len()
    }

    /// True when the table has no users.
    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file() {
        let path = Path::new("/etc/mailstorm/users");
        let text = b"# comment\n\n  # indented comment\nalice:s3cret\r\nbob:pa:ss word\n";
        let u = Users::parse(text, path).unwrap();
        assert_eq!(u.len(), 2);
        assert!(u.check("alice", "s3cret"));
        assert!(!u.check("alice", "s3cre"));
        assert!(!u.check("alice", "s3cret "));
        assert!(!u.check("Alice", "s3cret"));
        assert!(u.check("bob", "pa:ss word"));
        assert_eq!(u.password("bob"), Some("pa:ss word"));
        assert_eq!(u.password("carol"), None);
        assert!(!format!("{u:?}").contains("s3cret"));

        let cases: [(&[u8], usize, &str); 6] = [
            (b"alice:x\nno-colon\n", 2, "separator"),
            (b":pw\n", 1, "empty user"),
            (b"alice:\n", 1, "empty password"),
            (b"al ice:pw\n", 1, "user name"),
            (b"alice:p\x01w\n", 1, "control"),
            (b"\n\nalice:\xff\n", 3, "UTF-8"),
        ];
        for (text, line, what) in cases {
            let err = Users::parse(text, path).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("/etc/mailstorm/users:{line}: ")),
                "{msg}"
            );
            assert!(msg.contains(what), "{msg}");
        }
        let err = Users::parse(b"alice:a\nbob:b\nalice:c\n", path).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Duplicate {
                    line: 3,
                    first_line: 1,
                    ..
                }
            ),
            "{err}"
        );

        // load() reads files and names a missing one.
        let dir = std::env::temp_dir().join(format!("mailstorm-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        std::fs::write(&file, "tim:tanstaaftanstaaf\n").unwrap();
        assert!(Users::load(&file).unwrap().check("tim", "tanstaaftanstaaf"));
        let missing = dir.join("missing");
        let err = Users::load(&missing).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
