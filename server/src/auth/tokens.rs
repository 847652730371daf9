//! Bearer tokens (`--auth-tokens`): one `NAME SHA256-HEX-OF-TOKEN` per line.
//!
//! Only digests are on disk (a Kubernetes Secret), so reading the file does not reveal a token;
//! a request's token is hashed and compared with every digest in constant time, so the time an
//! answer takes says nothing about how much of a guess was right.

use sha2::{Digest, Sha256};

use super::AuthError;

/// The tokens file, loaded and checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(String, [u8; 32])>,
}

impl Tokens {
    /// Parses `text` of `file`: blank lines and `#` comments are skipped.
    pub fn parse(file: &str, text: &str) -> Result<Tokens, AuthError> {
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(name), Some(hex_digest), None) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(AuthError::at(
                    file,
                    line_no,
                    "write NAME and the SHA-256 of the token in hex, separated by a space \
                     (make one with: printf %s \"$TOKEN\" | sha256sum)",
                ));
            };
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
            {
                return Err(AuthError::at(
                    file,
                    line_no,
                    format!("token name {name:?}: use letters, digits, '-', '_', '.' or '@'"),
                ));
            }
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| {
                AuthError::at(
                    file,
                    line_no,
                    format!(
                        "token {name}: {hex_digest:?} is not a SHA-256 digest (64 hex digits); \
                         store the digest of the token, never the token itself"
                    ),
                )
            })?;
            if entries.iter().any(|(n, _)| n == name) {
                return Err(AuthError::at(
                    file,
                    line_no,
                    format!("token {name} is listed twice"),
                ));
            }
            if entries.iter().any(|(_, d)| *d == digest) {
                return Err(AuthError::at(
                    file,
                    line_no,
                    format!("token {name} has the same digest as an earlier entry (the same token under two names)"),
                ));
            }
            entries.push((name.to_string(), digest));
        }
        Ok(Tokens { entries })
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the file lists no token.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the token `token`, if it is one of ours.
    pub fn name_of(&self, token: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (name, known) in &self.entries {
            // every entry is compared in full, whatever matched before
            let diff = known
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    #[test]
    fn tokens_are_found_by_their_digest() {
        let text = format!(
            "# app tokens\napp {}\n\nops  {}\n",
            digest("s3cret"),
            digest("other")
        );
        let t = Tokens::parse("tokens", &text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.name_of("s3cret"), Some("app"));
        assert_eq!(t.name_of("other"), Some("ops"));
        assert_eq!(t.name_of("s3cret "), None);
        assert_eq!(t.name_of(""), None);
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        let d = digest("x");
        let cases = [
            ("app\n".to_string(), 1, "SHA-256"),
            (format!("\napp {d} extra\n"), 2, "SHA-256"),
            ("app s3cret\n".to_string(), 1, "never the token itself"),
            (format!("app {d}\napp {}\n", digest("y")), 2, "twice"),
            (format!("app {d}\nb {d}\n"), 2, "same digest"),
            (format!("a/b {d}\n"), 1, "token name"),
        ];
        for (text, line, says) in cases {
            let err = Tokens::parse("tokens", &text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("tokens: line {line}: ")), "{err}");
            assert!(err.contains(says), "{err}");
        }
    }
}
