//! A YAML emitter for JSON values whose output every Kubernetes tool reads back as the same
//! JSON. Kubernetes parses YAML with YAML 1.1 rules, where plain `yes`, `on`, `0440` or
//! `2026-01-01` are not strings; general-purpose YAML 1.2 emitters leave those unquoted. Here a
//! string is written plain only when no YAML version could read it as anything else.

use serde_json::Value;

/// Appends `document` as one YAML document (no `---`).
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::write_document;

    fn yaml(value: serde_json::Value) -> String {
        let mut out = String::new();
        write_document(&mut out, &value);
        out
    }

    #[test]
    fn strings_yaml_1_1_reads_otherwise_are_quoted() {
        for word in [
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "null",
            "~",
            "true",
            "0440",
            "1e3",
            "0x1f",
            "2026-01-01",
            "12:30",
            ".inf",
            "-1",
            "+1",
            "",
            " lead",
            "trail ",
            "a: b",
            "a #b",
            "*ref",
            "&anchor",
            "!tag",
            "{x}",
            "[x]",
            "%x",
            "@x",
            "`x`",
            "'x'",
            "\"x\"",
            "|",
            ">",
            "<<",
            "=",
        ] {
            let written = yaml(json!({ "k": word }));
            let quoted = serde_json::Value::from(word).to_string();
            assert_eq!(written, format!("k: {quoted}\n"), "{word:?}");
        }
    }

    #[test]
    fn plain_words_stay_plain() {
        for word in [
            "app",
            "/mnt/secrets-store",
            "kvinject-secrets",
            "a.b_c",
            "Hello World",
        ] {
            assert_eq!(yaml(json!({ "k": word })), format!("k: {word}\n"));
        }
    }

    #[test]
    fn numbers_booleans_and_null_are_written_as_such() {
        let written = yaml(json!({ "int": 440, "float": 1.5, "yes": true, "none": null }));
        assert_eq!(written, "int: 440\nfloat: 1.5\n\"yes\": true\nnone: null\n");
    }

    #[test]
    fn multi_line_text_is_a_literal_block_kept_exactly() {
        assert_eq!(yaml(json!({ "k": "a\nb\n" })), "k: |\n  a\n  b\n");
        assert_eq!(yaml(json!({ "k": "a\nb" })), "k: |-\n  a\n  b\n");
        assert_eq!(yaml(json!({ "k": "a\n\n" })), "k: |+\n  a\n\n");
        // Trailing spaces or a leading space cannot survive a block: quoted instead.
        assert_eq!(yaml(json!({ "k": "a \nb" })), "k: \"a \\nb\"\n");
    }

    #[test]
    fn nesting_follows_kubectl_layout() {
        let written = yaml(json!({
            "spec": { "containers": [ { "name": "app", "ports": [80] } ], "empty": [] }
        }));
        assert_eq!(
            written,
            "spec:\n  containers:\n  - name: app\n    ports:\n    - 80\n  empty: []\n"
        );
    }
}
