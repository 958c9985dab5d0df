//! Reading and writing Kubernetes manifests: multi-document YAML, or JSON (one or more values).
//!
//! Bytes to JSON values and back; nothing here knows what the documents mean.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

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
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| read_error("standard input", e))?;
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
        let bytes = fs::read(&file).map_err(|e| read_error(&name, e))?;
        let format = extension_format(&file).unwrap_or_else(|| sniff(&bytes));
        all_json &= format == Format::Json;
        documents.extend(parse(&bytes, format, &name)?);
    }
    Ok(Manifests {
        documents,
        format: if all_json { Format::Json } else { Format::Yaml },
    })
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
            for (i, document) in serde_yaml_ng::Deserializer::from_slice(bytes).enumerate() {
                let value =
                    Value::deserialize(document).map_err(|e| parse_error(i + 1, e.to_string()))?;
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

/// A YAML emitter for JSON values whose output every Kubernetes tool reads back as the same
/// JSON. Kubernetes parses YAML with YAML 1.1 rules, where plain `yes`, `on`, `0440` or
/// `2026-01-01` are not strings; general-purpose YAML 1.2 emitters leave those unquoted. Here a
/// string is written plain only when no YAML version could read it as anything else.
mod yaml {
    use serde_json::Value;

    pub fn write_document(out: &mut String, document: &Value) {
        match document {
            Value::Object(map) if !map.is_empty() => write_map(out, map, 0),
            Value::Array(items) if !items.is_empty() => write_list(out, items, 0),
            scalar => {
                write_scalar(out, scalar, 0);
                out.push('\n');
            }
        }
    }

    fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
        for (i, (key, value)) in map.iter().enumerate() {
            // The first key of a list item shares the `- ` line.
            if i > 0 || !out.ends_with("- ") {
                push_indent(out, indent);
            }
            write_string(out, key, indent, true);
            out.push(':');
            write_value(out, value, indent);
        }
    }

    fn write_list(out: &mut String, items: &[Value], indent: usize) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 || !out.ends_with("- ") {
                push_indent(out, indent);
            }
            out.push_str("- ");
            match item {
                Value::Object(map) if !map.is_empty() => write_map(out, map, indent + 2),
                Value::Array(inner) if !inner.is_empty() => write_list(out, inner, indent + 2),
                scalar => {
                    write_scalar(out, scalar, indent + 2);
                    out.push('\n');
                }
            }
        }
    }

    /// The value after `key:`: nested collections on the following lines.
    fn write_value(out: &mut String, value: &Value, indent: usize) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                out.push('\n');
                write_map(out, map, indent + 2);
            }
            // Lists under a key sit at the key's indentation, as kubectl writes them.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_list(out, items, indent);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, indent + 2);
                out.push('\n');
            }
        }
    }

    fn write_scalar(out: &mut String, value: &Value, indent: usize) {
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::String(s) => write_string(out, s, indent, false),
            Value::Array(_) => out.push_str("[]"),
            Value::Object(_) => out.push_str("{}"),
        }
    }

    fn write_string(out: &mut String, s: &str, indent: usize, is_key: bool) {
        if is_plain_safe(s) {
            out.push_str(s);
        } else if !is_key && is_block_safe(s) {
            write_literal_block(out, s, indent);
        } else {
            // A JSON string is a valid YAML double-quoted scalar.
            out.push_str(&Value::from(s).to_string());
        }
    }

    fn push_indent(out: &mut String, indent: usize) {
        out.extend(std::iter::repeat_n(' ', indent));
    }

    /// Multi-line text as a literal block (`|`), kept exactly, trailing newlines included.
    fn write_literal_block(out: &mut String, s: &str, indent: usize) {
        let body = s.trim_end_matches('\n');
        let chomp = match s.len() - body.len() {
            0 => "-",
            1 => "",
            _ => "+",
        };
        out.push('|');
        out.push_str(chomp);
        for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
            out.push('\n');
            if !line.is_empty() {
                push_indent(out, indent);
                out.push_str(line);
            }
        }
    }

    /// Text a literal block keeps byte for byte.
    fn is_block_safe(s: &str) -> bool {
        s.contains('\n')
            && !s.starts_with([' ', '\n'])
            && s.chars()
                .all(|c| c == '\n' || (!c.is_control() && c != '\u{feff}'))
            && s.split('\n').all(|line| !line.ends_with(' '))
    }

    /// Words YAML 1.1 resolves to booleans or null.
    const RESERVED: [&str; 14] = [
        "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", "<<", "=", ".inf", ".nan",
    ];

    /// Whether `s` reads back as the same string under YAML 1.1 and 1.2 when written plain.
    fn is_plain_safe(s: &str) -> bool {
        let Some(first) = s.chars().next() else {
            return false;
        };
        let lower = s.to_ascii_lowercase();
        (first.is_ascii_alphabetic() || first == '/' || first == '_')
            && !RESERVED.contains(&lower.as_str())
            && !s.ends_with([' ', ':'])
            && !s.contains(": ")
            && !s.contains(" #")
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(
                        c,
                        ' ' | '.' | '_' | '/' | '-' | ':' | '@' | '=' | '+' | ',' | '(' | ')'
                    )
            })
    }
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
