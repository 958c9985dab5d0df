//! The object reference grammar of annotation values:
//! `[<type>/]<name>[@<version>][?<option>=<value>[&...]]`.
//!
//! Parsing only: this module knows nothing about pods, vaults or SPCs.

use std::fmt;

use crate::core::held::Held;

/// Key Vault object type, the Azure provider's `objectType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectType {
    /// A secret (the default).
    Secret,
    /// A key; the provider mounts its public part.
    Key,
    /// A certificate; the provider mounts its public certificate.
    Cert,
}

impl ObjectType {
    /// The provider's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Key => "key",
            Self::Cert => "cert",
        }
    }
}

/// `format=` option, the provider's `objectFormat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectFormat {
    /// PEM.
    Pem,
    /// PKCS#12, only for secrets that back a certificate.
    Pfx,
}

impl ObjectFormat {
    /// The provider's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pem => "pem",
            Self::Pfx => "pfx",
        }
    }
}

/// `encoding=` option, the provider's `objectEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectEncoding {
    /// UTF-8 text (the provider's default).
    Utf8,
    /// Hex-encoded bytes.
    Hex,
    /// Base64-encoded bytes.
    Base64,
}

impl ObjectEncoding {
    /// The provider's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Utf8 => "utf-8",
            Self::Hex => "hex",
            Self::Base64 => "base64",
        }
    }
}

/// A parsed object reference. Two references are the same object when they are equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Object type.
    pub object_type: ObjectType,
    /// Key Vault object name.
    pub name: String,
    /// Pinned version (32 hex chars), or latest.
    pub version: Option<String>,
    /// `format=` option.
    pub format: Option<ObjectFormat>,
    /// `encoding=` option.
    pub encoding: Option<ObjectEncoding>,
    /// `mode=` option, normalised to four octal digits (`0440`).
    pub mode: Option<String>,
    /// `vault=` option, lowercased (Key Vault names are DNS labels): the object lives in this
    /// vault instead of the pod's.
    pub vault: Option<String>,
}

impl Held for ObjectRef {
    fn heap(&self) -> usize {
        // The type, format and encoding are plain enums, held in place.
        self.name.heap() + self.version.heap() + self.mode.heap() + self.vault.heap()
    }
}

/// Why a reference does not parse; the text completes "reference `…` …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReferenceError(String);

fn fail<T>(message: impl Into<String>) -> Result<T, ReferenceError> {
    Err(ReferenceError(message.into()))
}

impl ObjectRef {
    /// Parses one annotation value.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let input = input.trim();
        let (head, options) = match input.split_once('?') {
            Some((head, options)) => (head, Some(options)),
            None => (input, None),
        };
        let (object_type, rest) = match head.split_once('/') {
            Some((kind, rest)) => (parse_type(kind)?, rest),
            None => (ObjectType::Secret, head),
        };
        let (name, version) = match rest.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (rest, None),
        };
        check_object_name(name)?;
        if let Some(version) = version
            && (version.len() != 32 || !version.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return fail(format!(
                "has version `{version}`, but a Key Vault version is 32 hex characters"
            ));
        }
        let mut reference = ObjectRef {
            object_type,
            name: name.to_owned(),
            version: version.map(str::to_owned),
            format: None,
            encoding: None,
            mode: None,
            vault: None,
        };
        if let Some(options) = options {
            reference.apply_options(options)?;
        }
        Ok(reference)
    }

    fn apply_options(&mut self, options: &str) -> Result<(), ReferenceError> {
        for option in options.split('&') {
            let Some((key, value)) = option.split_once('=') else {
                return fail(format!("has option `{option}` without `=<value>`"));
            };
            let duplicate = match key {
                "format" => self
                    .format
                    .replace(parse_format(value, self.object_type)?)
                    .is_some(),
                "encoding" => self
                    .encoding
                    .replace(parse_encoding(value, self.object_type)?)
                    .is_some(),
                "mode" => self.mode.replace(parse_mode(value)?).is_some(),
                "vault" => self.vault.replace(parse_vault(value)?).is_some(),
                _ => {
                    return fail(format!(
                        "has unknown option `{key}`; the options are format, encoding, mode and vault"
                    ));
                }
            };
            if duplicate {
                return fail(format!("sets option `{key}` twice"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for ObjectRef {
    /// The canonical spelling, which parses back to an equal reference.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.object_type.as_str(), self.name)?;
        if let Some(version) = &self.version {
            write!(f, "@{version}")?;
        }
        let options = [
            self.format.map(|v| ("format", v.as_str())),
            self.encoding.map(|v| ("encoding", v.as_str())),
            self.mode.as_deref().map(|v| ("mode", v)),
            self.vault.as_deref().map(|v| ("vault", v)),
        ];
        let mut separator = '?';
        for (key, value) in options.into_iter().flatten() {
            write!(f, "{separator}{key}={value}")?;
            separator = '&';
        }
        Ok(())
    }
}

fn parse_type(kind: &str) -> Result<ObjectType, ReferenceError> {
    match kind {
        "secret" => Ok(ObjectType::Secret),
        "key" => Ok(ObjectType::Key),
        "cert" => Ok(ObjectType::Cert),
        _ => fail(format!(
            "has type `{kind}`; the types are secret (the default), key and cert"
        )),
    }
}

fn check_object_name(name: &str) -> Result<(), ReferenceError> {
    if name.is_empty() {
        return fail("names no object; write the Key Vault object name, e.g. `db-password`");
    }
    if name.len() > 127 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return fail(format!(
            "has object name `{name}`, but a Key Vault object name is 1-127 characters of letters, digits and `-`"
        ));
    }
    Ok(())
}

fn parse_format(value: &str, object_type: ObjectType) -> Result<ObjectFormat, ReferenceError> {
    match (value, object_type) {
        ("pem", _) => Ok(ObjectFormat::Pem),
        ("pfx", ObjectType::Secret) => Ok(ObjectFormat::Pfx),
        ("pfx", _) => fail(format!(
            "asks format=pfx for a {}; pfx is only for secrets (write `secret/<name>?format=pfx`)",
            object_type.as_str()
        )),
        _ => fail(format!("has format `{value}`; the formats are pem and pfx")),
    }
}

fn parse_encoding(value: &str, object_type: ObjectType) -> Result<ObjectEncoding, ReferenceError> {
    if object_type != ObjectType::Secret {
        return fail(format!(
            "sets encoding for a {}; encoding is only for secrets",
            object_type.as_str()
        ));
    }
    match value {
        "utf-8" => Ok(ObjectEncoding::Utf8),
        "hex" => Ok(ObjectEncoding::Hex),
        "base64" => Ok(ObjectEncoding::Base64),
        _ => fail(format!(
            "has encoding `{value}`; the encodings are utf-8, hex and base64"
        )),
    }
}

fn parse_mode(value: &str) -> Result<String, ReferenceError> {
    let digits = value.strip_prefix('0').unwrap_or(value);
    if digits.len() == 3 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        Ok(format!("0{digits}"))
    } else {
        fail(format!(
            "has mode `{value}`; a mode is an octal file permission such as 0440"
        ))
    }
}

fn parse_vault(value: &str) -> Result<String, ReferenceError> {
    match check_vault_name(value) {
        Ok(()) => Ok(value.to_ascii_lowercase()),
        Err(problem) => fail(format!("has vault `{value}`, which {problem}")),
    }
}

/// A Key Vault name: 3-24 letters, digits and single `-`, starting with a letter.
pub fn check_vault_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let valid = (3..=24).contains(&name.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err("is not a Key Vault name (3-24 letters, digits and single `-`, starting with a letter, ending with a letter or digit)".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of a reference counts towards what a remembered answer holds.
    #[test]
    fn a_reference_counts_every_string_it_holds() {
        let reference = |text: &str| ObjectRef {
            object_type: ObjectType::Secret,
            name: text.to_owned(),
            version: Some(text.to_owned()),
            format: None,
            encoding: None,
            mode: Some(text.to_owned()),
            vault: Some(text.to_owned()),
        };
        let long = "a".repeat(101);
        assert_eq!(reference(&long).heap() - reference("a").heap(), 4 * 100);
    }

    #[test]
    fn parses_every_part_of_the_grammar() {
        let cases: &[(&str, &str)] = &[
            ("db-password", "secret/db-password"),
            ("secret/db-password", "secret/db-password"),
            ("key/signing", "key/signing"),
            ("cert/tls", "cert/tls"),
            (
                "db@0123456789abcdef0123456789ABCDEF",
                "secret/db@0123456789abcdef0123456789ABCDEF",
            ),
            ("cert/tls?format=pem", "cert/tls?format=pem"),
            (
                "tls?format=pfx&encoding=base64",
                "secret/tls?format=pfx&encoding=base64",
            ),
            ("db?mode=440", "secret/db?mode=0440"),
            (
                "db?mode=0640&encoding=hex",
                "secret/db?encoding=hex&mode=0640",
            ),
            ("  db  ", "secret/db"),
            ("db?vault=Platform-KV", "secret/db?vault=platform-kv"),
            (
                "cert/ca?vault=platform-kv&mode=0400",
                "cert/ca?mode=0400&vault=platform-kv",
            ),
        ];
        for (input, canonical) in cases {
            let parsed = ObjectRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.to_string(), *canonical, "{input}");
            assert_eq!(
                ObjectRef::parse(canonical).unwrap(),
                parsed,
                "{canonical} round trip"
            );
        }
    }

    #[test]
    fn refuses_what_the_provider_would_refuse() {
        let cases: &[(&str, &str)] = &[
            ("", "names no object"),
            ("secret/", "names no object"),
            ("blob/x", "has type `blob`"),
            ("db_password", "letters, digits and `-`"),
            ("../etc/passwd", "has type `..`"),
            ("db/../x", "has type `db`"),
            ("db@123", "32 hex characters"),
            ("db@0123456789abcdef0123456789abcdeg", "32 hex characters"),
            ("key/k?format=pfx", "pfx is only for secrets"),
            ("cert/c?encoding=hex", "only for secrets"),
            ("db?format=der", "the formats are pem and pfx"),
            ("db?encoding=utf8", "the encodings are"),
            ("db?mode=0999", "octal file permission"),
            ("db?mode=4755", "octal file permission"),
            ("db?mode=0440&mode=0400", "sets option `mode` twice"),
            ("db?owner=me", "unknown option `owner`"),
            ("db?format", "without `=<value>`"),
            ("db?vault=kv", "is not a Key Vault name"),
            ("db?vault=platform--kv", "is not a Key Vault name"),
            ("db?vault=a&vault=b", "is not a Key Vault name"),
            ("db?vault=kv-a&vault=kv-b", "sets option `vault` twice"),
        ];
        for (input, expected) in cases {
            let err = ObjectRef::parse(input).expect_err(input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
        let long = "a".repeat(128);
        assert!(ObjectRef::parse(&long).is_err());
        assert!(ObjectRef::parse(&long[..127]).is_ok());
    }
}
