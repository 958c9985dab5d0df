//! Compact JSON text written straight into a `String`, for the few documents kvinject builds on
//! every admission (the patch, the generated SPC's canonical spec, the answer): the same bytes
//! `serde_json::to_string` gives for the same values, without building a `Value` first.

use std::fmt::Write;

/// Appends `text` as a JSON string, escaped exactly as `serde_json` escapes it.
pub fn push_string(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    push_escaped(out, text);
    out.push('"');
}

/// Appends `text` escaped as inside a JSON string, without the quotes.
pub fn push_escaped(out: &mut String, text: &str) {
    // Runs without escapes (most strings are one: names, paths) are copied whole.
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(at) = next_escaped(&bytes[start..]).map(|offset| start + offset) {
        // An escaped byte is ASCII: `at` is a char boundary.
        out.push_str(&text[start..at]);
        let byte = bytes[at];
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        if escape.is_empty() {
            // Writing into a String cannot fail.
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = at + 1;
    }
    out.push_str(&text[start..]);
}

/// A `fmt::Write` into a JSON string's inside: what is written is escaped as
/// [`push_escaped`] escapes it (a value formatted straight into a string, without a copy).
pub struct Escaping<'a>(pub &'a mut String);

impl Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

/// Whether JSON escapes `byte` in a string: `"`, `\` and the control characters.
fn is_escaped(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The index of the first byte of `bytes` JSON escapes: sixteen bytes at a time where SSE2 is
/// part of the target (every x86-64), then eight at a time ([`next_escaped_in_words`]).
#[inline(always)]
pub(crate) fn next_escaped(bytes: &[u8]) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        use safe_arch::{
            bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, max_u8_m128i,
            move_mask_i8_m128i, set_splat_i8_m128i,
        };
        let quote = set_splat_i8_m128i(b'"' as i8);
        let backslash = set_splat_i8_m128i(b'\\' as i8);
        let below_space = set_splat_i8_m128i(0x1f);
        let mut blocks = bytes.chunks_exact(16);
        let mut offset = 0;
        for block in &mut blocks {
            let block = load_unaligned_m128i(block.try_into().unwrap_or(&[0; 16]));
            // A control character is one whose maximum with 0x1f is 0x1f.
            let control = cmp_eq_mask_i8_m128i(max_u8_m128i(block, below_space), below_space);
            let quote_or_backslash = bitor_m128i(
                cmp_eq_mask_i8_m128i(block, quote),
                cmp_eq_mask_i8_m128i(block, backslash),
            );
            let found = move_mask_i8_m128i(bitor_m128i(control, quote_or_backslash));
            if found != 0 {
                return Some(offset + found.trailing_zeros() as usize);
            }
            offset += 16;
        }
        next_escaped_in_words(blocks.remainder()).map(|at| offset + at)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    next_escaped_in_words(bytes)
}

/// [`next_escaped`] eight bytes at a time. Each word test below flags the bytes that are the
/// byte sought, and can also flag bytes above one of those (a borrow starts only at a byte
/// sought): the lowest flagged byte is always the first sought.
#[inline(always)]
fn next_escaped_in_words(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
        let quote = has_zero(word ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
        let found = control | quote | backslash;
        if found != 0 {
            return Some(offset + found.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    let rest = chunks.remainder();
    rest.iter().position(|&b| is_escaped(b)).map(|i| offset + i)
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

    #[test]
    fn every_escaped_byte_is_found_wherever_it_sits_in_a_word() {
        // Strings are scanned sixteen bytes at a time, then eight, then one: each byte JSON
        // escapes, and its neighbours the scan must not mistake for one (0x20, `#`, `]`, 0x7f,
        // high bytes), at every offset of the first three blocks, the words after them and the
        // tail.
        let escaped = (0u8..0x20).chain([b'"', b'\\']);
        let near = [0x20u8, 0x21, b'#', b']', 0x7f];
        for byte in escaped
            .map(char::from)
            .chain(near.map(char::from))
            .chain(['é', '€'])
        {
            for len in 0..60 {
                for at in 0..len {
                    let mut text: String = "ab-é/x~".chars().cycle().take(len).collect();
                    let at = text.char_indices().nth(at).map(|(i, _)| i).unwrap();
                    text.insert(at, byte);
                    let mut out = String::new();
                    push_string(&mut out, &text);
                    assert_eq!(out, serde_json::to_string(&text).unwrap(), "{text:?}");
                }
            }
        }
    }
}
