//! Compact JSON text written straight into a `String`, for the few documents kvinject builds on
//! every admission (the patch, the generated SPC's canonical spec, the answer): the same bytes
//! `serde_json::to_string` gives for the same values, without building a `Value` first.

use std::fmt::Write;

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

/// Appends `"key":` (a member's name and its colon).
pub fn push_key(out: &mut String, key: &str) {
    push_string(out, key);
    out.push(':');
}

#[cfg(test)]
mod tests {
    use super::*;

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
