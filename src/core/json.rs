//! Compact JSON text written straight into a `String`, for the few documents kvinject builds on
//! every admission (the patch, the generated SPC's canonical spec, the answer): the same bytes
//! `serde_json::to_string` gives for the same values, without building a `Value` first.

use std::fmt::Write;

use serde_json::Value;

/// Objects up to this many members are searched by comparing keys, not by hashing one.
const SCANNED_MEMBERS: usize = 8;

/// `value.get(key)`, for the small objects of a pruned pod: a linear scan of a handful of
/// members costs less than hashing the key with the map's SipHash.
pub fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) if map.len() <= SCANNED_MEMBERS => {
            map.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
        }
        Value::Object(map) => map.get(key),
        _ => None,
    }
}

/// `&value[key]`: [`get`], `null` when absent or not an object.
pub fn field<'a>(value: &'a Value, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    get(value, key).unwrap_or(&NULL)
}

/// Appends `text` as a JSON string, escaped exactly as `serde_json` escapes it.
pub fn push_string(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    // Most strings (names, paths, base64) need no escape: copied whole after one scan.
    let Some(first) = text
        .bytes()
        .position(|b| b < 0x20 || b == b'"' || b == b'\\')
    else {
        out.push_str(text);
        out.push('"');
        return;
    };
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate().skip(first) {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..at]);
        if escape.is_empty() {
            // Writing into a String cannot fail.
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = at + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// Appends `[<item>,<item>,...]`, each item written by `write`.
pub fn push_array<T>(out: &mut String, items: &[T], write: impl Fn(&mut String, &T)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, item);
    }
    out.push(']');
}

/// Appends `"key":` (a member's name and its colon).
pub fn push_key(out: &mut String, key: &str) {
    push_string(out, key);
    out.push(':');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_are_found_as_indexing_finds_them() {
        let many: serde_json::Map<String, Value> =
            (0..20).map(|i| (format!("k{i}"), json!(i))).collect();
        let many = Value::Object(many);
        let few = json!({"name": "app", "env": [], "": 0});
        for (value, key) in [
            (&few, "name"),
            (&few, "env"),
            (&few, ""),
            (&few, "missing"),
            (&many, "k0"),
            (&many, "k19"),
            (&many, "k20"),
            (&json!("text"), "name"),
            (&json!(null), "name"),
        ] {
            assert_eq!(get(value, key), value.get(key), "{key}");
            assert_eq!(field(value, key), &value[key], "{key}");
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let every_ascii: String = (0u8..=0x7f).map(char::from).collect();
        for text in [
            "",
            "plain",
            "quote \" and \\ backslash",
            "é ∑ 🦀 and \u{2028}",
            every_ascii.as_str(),
        ] {
            let mut out = String::new();
            push_string(&mut out, text);
            assert_eq!(out, serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }
}
