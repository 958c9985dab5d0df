//! Reading and writing Kubernetes manifests: multi-document YAML, or JSON (one or more values).
//!
//! Bytes to JSON values and back; nothing here knows what the documents mean.

use std::cell::Cell;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeSeed;
use serde_json::Value;

use crate::offline::bounded::BoundedValue;
use crate::offline::yaml;

/// Largest source `inject` reads (a file, or standard input): far more than any set of
/// manifests, far less than the machine.
pub const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;

/// What the JSON values of one YAML source may take, in bytes charged (text plus a node cost):
/// room for ordinary YAML of any shape, not for alias bombs.
fn expansion_limit(source_len: usize) -> usize {
    (64 * 1024 * 1024usize).max(source_len.saturating_mul(64))
}

/// How manifests are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Multi-document YAML.
    Yaml,
    /// JSON values, one after another.
    Json,
}

/// Why manifests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory that cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// What was being read.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A document that does not parse.
    #[error("{source_name}: document {index}: {reason}")]
    Parse {
        /// Where it came from.
        source_name: String,
        /// 1-based document number within the source.
        index: usize,
        /// The parser's message.
        reason: String,
    },
    /// A source larger than [`MAX_SOURCE_BYTES`].
    #[error("{0}: larger than {MAX_SOURCE_BYTES} bytes; split it")]
    TooLarge(String),
    /// A directory with no manifest in it.
    #[error("{0}: no .yaml, .yml or .json file in this directory")]
    EmptyDirectory(String),
}

/// Documents read from one or more sources, in order.
#[derive(Debug, Clone)]
pub struct Manifests {
    /// The documents (empty YAML documents are dropped).
    pub documents: Vec<Value>,
    /// JSON when every source was JSON, YAML otherwise.
    pub format: Format,
}

/// Reads `source`: a file, a directory (its `.yaml`, `.yml` and `.json` files by name, not
/// recursive, as `kubectl apply -f` does) or `-` for standard input.
pub fn read(source: &str) -> Result<Manifests, ManifestError> {
    let read_error = |path: &str, source| ManifestError::Read {
        path: path.to_owned(),
        source,
    };
    if source == "-" {
        let bytes = read_bounded(std::io::stdin(), "standard input")?;
        let format = sniff(&bytes);
        return Ok(Manifests {
            documents: parse(&bytes, format, "standard input")?,
            format,
        });
    }
    let path = Path::new(source);
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = fs::read_dir(path)
            .map_err(|e| read_error(source, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && extension_format(p).is_some())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ManifestError::EmptyDirectory(source.to_owned()));
        }
        files
    } else {
        vec![path.to_owned()]
    };
    let mut documents = Vec::new();
    let mut all_json = true;
    for file in files {
        let name = file.display().to_string();
        let opened = fs::File::open(&file).map_err(|e| read_error(&name, e))?;
        let bytes = read_bounded(opened, &name)?;
        let format = extension_format(&file).unwrap_or_else(|| sniff(&bytes));
        all_json &= format == Format::Json;
        documents.extend(parse(&bytes, format, &name)?);
    }
    Ok(Manifests {
        documents,
        format: if all_json { Format::Json } else { Format::Yaml },
    })
}

/// Reads at most [`MAX_SOURCE_BYTES`] from `input`; more is an error, not a truncation.
fn read_bounded(input: impl Read, name: &str) -> Result<Vec<u8>, ManifestError> {
    let mut bytes = Vec::new();
    input
        .take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ManifestError::Read {
            path: name.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(ManifestError::TooLarge(name.to_owned()));
    }
    Ok(bytes)
}

/// Parses every document in `bytes`.
pub fn parse(bytes: &[u8], format: Format, source_name: &str) -> Result<Vec<Value>, ManifestError> {
    let parse_error = |index, reason: String| ManifestError::Parse {
        source_name: source_name.to_owned(),
        index,
        reason,
    };
    let mut documents = Vec::new();
    match format {
        Format::Json => {
            for (i, value) in serde_json::Deserializer::from_slice(bytes)
                .into_iter::<Value>()
                .enumerate()
            {
                documents.push(value.map_err(|e| parse_error(i + 1, e.to_string()))?);
            }
        }
        Format::Yaml => {
            // One budget for the whole source: what YAML aliases can make of it is bounded.
            let limit = expansion_limit(bytes.len());
            let budget = Cell::new(limit);
            for (i, document) in serde_yaml_ng::Deserializer::from_slice(bytes).enumerate() {
                let value = BoundedValue::new(&budget, limit)
                    .deserialize(document)
                    .map_err(|e| parse_error(i + 1, e.to_string()))?;
                if !value.is_null() {
                    documents.push(value);
                }
            }
        }
    }
    Ok(documents)
}

/// Writes `documents` in `format`: YAML documents separated by `---`, or pretty JSON values.
pub fn write(documents: &[Value], format: Format) -> String {
    let mut out = String::new();
    for (i, document) in documents.iter().enumerate() {
        match format {
            Format::Yaml => {
                if i > 0 {
                    out.push_str("---\n");
                }
                yaml::write_document(&mut out, document);
            }
            Format::Json => {
                out.push_str(&serde_json::to_string_pretty(document).unwrap_or_default());
                out.push('\n');
            }
        }
    }
    out
}

fn extension_format(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "json" => Some(Format::Json),
        "yaml" | "yml" => Some(Format::Yaml),
        _ => None,
    }
}

fn sniff(bytes: &[u8]) -> Format {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | Some(b'[') => Format::Json,
        _ => Format::Yaml,
    }
}
