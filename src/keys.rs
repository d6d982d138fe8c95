//! Signed group keys (`--key-secret`): the secrets file, signing a name, checking a key.
//!
//! A signed key is `NAME.SIG`, split at the last `.`, where `SIG` is the unpadded base64url
//! (RFC 4648 §5) of HMAC-SHA256(secret, NAME). An application's backend mints keys with the
//! secret; the server lets in only keys signed with one of its secrets, so a stranger cannot
//! open or join groups on it. Pure: no sockets, no clock; the file is read by [`load`].

use std::fmt;
use std::path::{Path, PathBuf};

use ring::hmac;

/// Length of `SIG`: 32 bytes of HMAC-SHA256 in unpadded base64url.
pub const SIGNATURE_LEN: usize = 43;

/// The secrets keys may be signed with: at least one. Keys are signed with the first; a key
/// signed with any of them is accepted, so a secret can be rotated without a cut (add the
/// new one first, move the backends to it, then drop the old one).
#[derive(Debug, Clone)]
pub struct Secrets {
    first: hmac::Key,
    rest: Vec<hmac::Key>,
}

impl Secrets {
    /// The secrets of a file's text: one a line, surrounding whitespace trimmed, empty lines
    /// ignored. `None` when there is none.
    pub fn from_lines(text: &[u8]) -> Option<Self> {
        let mut keys = text
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.is_empty())
            .map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret));
        let first = keys.next()?;
        Some(Self {
            first,
            rest: keys.collect(),
        })
    }

    /// How many secrets there are.
    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Always false: there is at least one secret (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `SIG` for `name`, with the first secret.
    pub fn signature(&self, name: &[u8]) -> String {
        base64url(hmac::sign(&self.first, name).as_ref())
    }

    /// The signed key `NAME.SIG`, with the first secret.
    pub fn signed_key(&self, name: &str) -> String {
        format!("{name}.{}", self.signature(name.as_bytes()))
    }

    /// Whether `key` (the URL path as sent) is `NAME.SIG` with `SIG` the signature of `NAME`
    /// under one of the secrets. The comparison is ring's, in constant time, so the time
    /// taken tells a forger nothing about how close a guess came.
    pub fn is_signed(&self, key: &[u8]) -> bool {
        let Some(dot) = key.iter().rposition(|&b| b == b'.') else {
            return false;
        };
        let (name, sig) = (&key[..dot], &key[dot + 1..]);
        let Some(tag) = decode_signature(sig) else {
            return false;
        };
        std::iter::once(&self.first)
            .chain(&self.rest)
            .any(|secret| hmac::verify(secret, name, &tag).is_ok())
    }
}

/// A secrets file that cannot be used: which file, and why.
#[derive(Debug)]
pub struct KeySecretError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for KeySecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for KeySecretError {}

/// Reads the secrets file (a regular file, opened without blocking, as the TLS files are:
/// it is read again on reload, inside the loop).
pub fn load(path: &Path) -> Result<Secrets, KeySecretError> {
    let fail = |problem: String| KeySecretError {
        path: path.to_owned(),
        problem,
    };
    let text = crate::files::read_regular(path).map_err(fail)?;
    Secrets::from_lines(&text).ok_or_else(|| fail("no secret in it (one a line expected)".into()))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (RFC 4648 §5, without the `=` of §3.2): the form a URL path carries
/// as is.
pub fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 4).div_ceil(3));
    for chunk in bytes.chunks(3) {
        // The chunk's bytes at the top of 24 bits; a short chunk yields one character more
        // than it has bytes.
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// The 32 bytes of a `SIG`, or `None` when it is not exactly [`SIGNATURE_LEN`] base64url
/// characters. 43 characters carry 258 bits: the last 2 must be zero, so that a signature
/// has one spelling only.
fn decode_signature(sig: &[u8]) -> Option<[u8; 32]> {
    if sig.len() != SIGNATURE_LEN {
        return None;
    }
    let mut tag = [0u8; 32];
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for &c in sig {
        let value = ALPHABET.iter().position(|&a| a == c)?;
        acc = (acc << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *tag.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(text: &str) -> Secrets {
        Secrets::from_lines(text.as_bytes()).expect("a secret")
    }

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        // RFC 4648 §10, without padding; then the two characters base64url changes (§5).
        let cases: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff], "-_8"),
            (&[0xff; 3], "____"),
            (&[0; 3], "AAAA"),
        ];
        for (bytes, text) in cases {
            assert_eq!(base64url(bytes), *text, "{bytes:?}");
        }
    }

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        // HMAC-SHA256("Jefe", "what do ya want for nothing?") = 5bdcc146…3843, in base64url.
        let s = secrets("Jefe\n");
        let sig = s.signature(b"what do ya want for nothing?");
        assert_eq!(sig, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM");
        assert_eq!(sig.len(), SIGNATURE_LEN);
        assert_eq!(
            decode_signature(sig.as_bytes()).map(|t| t.to_vec()),
            Some(
                hmac::sign(&s.first, b"what do ya want for nothing?")
                    .as_ref()
                    .to_vec()
            )
        );
    }

    #[test]
    fn a_signed_key_verifies_and_forgeries_do_not() {
        let s = secrets("s3cret");
        let good = s.signed_key("room.42");
        assert!(s.is_signed(good.as_bytes()), "split at the last dot");
        let sig = s.signature(b"room");
        let other = secrets("other").signed_key("room");
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let bad: Vec<Vec<u8>> = vec![
            b"room".to_vec(),
            b"room.".to_vec(),
            format!("other.{sig}").into_bytes(),
            format!("room.{sig}x").into_bytes(),
            format!("room.{}", &sig[1..]).into_bytes(),
            format!("room.{sig}.").into_bytes(),
            format!("room%2E{sig}").into_bytes(),
            other.into_bytes(),
            flipped,
            Vec::new(),
        ];
        for key in bad {
            assert!(!s.is_signed(&key), "{}", String::from_utf8_lossy(&key));
        }
    }

    #[test]
    fn a_signature_has_one_spelling() {
        // The last character carries 4 bits of the tag and 2 spare ones: set a spare bit and
        // the same tag is no longer accepted.
        let s = secrets("k");
        let sig = s.signature(b"n");
        let last = ALPHABET
            .iter()
            .position(|&c| Some(&c) == sig.as_bytes().last())
            .unwrap();
        let spare = char::from(ALPHABET[last | 1]);
        let respelled = format!("n.{}{spare}", &sig[..SIGNATURE_LEN - 1]);
        assert_ne!(respelled, format!("n.{sig}"));
        assert!(!s.is_signed(respelled.as_bytes()));
        assert_eq!(
            decode_signature(b"not base64url: 43 characters of it!!!!!!!!"),
            None
        );
    }

    #[test]
    fn any_secret_of_the_file_verifies_and_the_first_signs() {
        let s = secrets("  new  \r\n\n\t\nold\n");
        assert_eq!(s.len(), 2);
        let new = secrets("new").signed_key("g");
        let old = secrets("old").signed_key("g");
        assert!(s.is_signed(new.as_bytes()) && s.is_signed(old.as_bytes()));
        assert_eq!(s.signed_key("g"), new);
        assert!(!s.is_signed(secrets("older").signed_key("g").as_bytes()));
    }

    #[test]
    fn a_file_without_a_secret_is_refused() {
        for text in ["", "\n", "  \n\t\r\n"] {
            assert!(Secrets::from_lines(text.as_bytes()).is_none(), "{text:?}");
        }
        let dir = std::env::temp_dir().join(format!("sigver-keys-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "a\nb\n").unwrap();
        assert_eq!(load(&good).unwrap().len(), 2);
        for path in [empty, dir.join("missing"), dir.clone()] {
            let e = load(&path).unwrap_err();
            assert!(
                e.to_string().starts_with(&path.display().to_string()),
                "{e}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
