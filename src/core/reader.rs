//! The pruned read of [`crate::core::pruned`] without serde's machinery, for the admission hot
//! path: one pass over the bytes that keeps what a [`Keep`] rule keeps and checks everything it
//! skips is JSON, as `serde_json` would.
//!
//! It is a fast path, never the only one: it gives up (`None`) on anything out of the ordinary
//! (a member name with an escape, a repeated envelope field, any JSON `serde_json` would refuse),
//! and the caller then reads the same bytes with `serde_json`, which gives the answer or the
//! error. What it reads itself it reads as `serde_json` does: numbers and strings with escapes
//! are handed to `serde_json` one by one (`pruned::from_str` on the value's own text), so only
//! plain strings, literals and structure are read here. Tests and the `admission_review` fuzz
//! target check that both reads give the same request for every body this one accepts.
//!
//! Nesting: kept values nest only as deep as the schema; skipped ones are skipped without
//! recursion, with a stack of the brackets open (memory follows the depth read).

use std::borrow::Cow;

use crate::core::json::next_escaped;
use crate::core::node::Node;
use crate::core::pruned::{self, Keep, KeptObject};

/// A position in one JSON text.
pub struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// What [`Self::skip`] keeps of the containers open past 64 levels: 1 for an object, 0
    /// for an array, innermost last.
    open: Vec<u8>,
    /// What the value being read may still keep (see [`pruned::MAX_KEPT_VALUES`]).
    left: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            at: 0,
            open: Vec::new(),
            left: pruned::MAX_KEPT_VALUES,
        }
    }

    /// The text from here to the end.
    pub fn rest(&self) -> &'a str {
        self.text.get(self.at..).unwrap_or_default()
    }

    /// Takes the next `length` bytes, which must end on a char boundary; their text.
    pub fn take(&mut self, length: usize) -> Option<&'a str> {
        let taken = self.text.get(self.at..self.at.checked_add(length)?)?;
        self.at += length;
        Some(taken)
    }

    /// Whether only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// The next byte after whitespace, without taking it.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        next_token(self.bytes, &mut self.at)
    }

    /// Takes `byte`, after whitespace.
    pub fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Reads `{`, or `,` between members, and the next member's name and `:`; `None` for the
    /// name at the closing `}` (taken). `first` says whether a member was read before.
    #[inline(always)]
    pub fn member(&mut self, first: bool) -> Option<Option<&'a str>> {
        if first {
            self.expect(b'{')?;
            if self.peek()? == b'}' {
                self.at += 1;
                return Some(None);
            }
        } else {
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(None);
                }
                _ => return None,
            }
        }
        let name = self.plain_name()?;
        self.expect(b':')?;
        Some(Some(name))
    }

    /// A member name without escapes (one with escapes gives up).
    #[inline(always)]
    fn plain_name(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let (from, to, escaped) = self.string()?;
        if escaped {
            return None;
        }
        self.between_quotes(from, to)
    }

    /// The text of a string without escapes, between its quotes (`from` and `to` follow and
    /// precede an ASCII quote, so they are char boundaries: never `None`). Split off rather than
    /// indexed, which the compiler inlines (indexing was a call for every name and kept string).
    #[inline(always)]
    fn between_quotes(&self, from: usize, to: usize) -> Option<&'a str> {
        let (before_end, _) = self.text.split_at_checked(to)?;
        Some(before_end.split_at_checked(from)?.1)
    }

    /// Takes a string whose opening quote is next; the bounds of its content and whether it
    /// holds an escape. Checks what `serde_json` checks of a string it skips: no control
    /// characters, and escapes among `\" \\ \/ \b \f \n \r \t \uXXXX`.
    #[inline(always)]
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        let from = self.at + 1;
        let (to, escaped) = string_end(self.bytes, from)?;
        self.at = to + 1;
        Some((from, to, escaped))
    }

    /// Takes a number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let digits = |reader: &mut Self| {
            let from = reader.at;
            while let Some(b'0'..=b'9') = reader.bytes.get(reader.at) {
                reader.at += 1;
            }
            reader.at > from
        };
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.bytes.get(self.at)? {
            b'0' => {
                self.at += 1;
                if let Some(b'0'..=b'9') = self.bytes.get(self.at) {
                    return None;
                }
            }
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if !digits(self) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        Some(())
    }

    /// Takes `word` (`true`, `false`, `null`).
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let found = self.bytes.get(self.at..self.at + word.len())? == word;
        found.then(|| self.at += word.len())
    }

    /// Takes one scalar (string, number or literal) that starts with `first`.
    fn scalar(&mut self, first: u8) -> Option<()> {
        match first {
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// Skips one value, checking it is JSON, without recursion. The position is kept in a
    /// local and the open containers in the bits of a word (1 for an object, the innermost
    /// lowest), so the loop works in registers; past 64 levels the outer ones wait in
    /// [`Self::open`], one byte each.
    pub fn skip(&mut self) -> Option<()> {
        let bytes = self.bytes;
        let mut at = self.at;
        let mut objects = 0u64;
        let mut depth = 0usize;
        loop {
            // A value starts here.
            let first = next_token(bytes, &mut at)?;
            match first {
                b'{' | b'[' => {
                    at += 1;
                    // `}` and `]` are two past `{` and `[`.
                    if next_token(bytes, &mut at)? == first + 2 {
                        at += 1;
                    } else {
                        if depth >= 64 {
                            self.open.push((objects >> 63) as u8);
                        }
                        let object = first == b'{';
                        objects = objects << 1 | u64::from(object);
                        depth += 1;
                        if object {
                            at = name_and_colon(bytes, at)?;
                        }
                        continue;
                    }
                }
                b'"' => at = string_end(bytes, at + 1)?.0 + 1,
                _ => {
                    self.at = at;
                    self.scalar(first)?;
                    at = self.at;
                }
            }
            // A value ended: close what it ends, or go on to the next item or member.
            loop {
                if depth == 0 {
                    self.at = at;
                    return Some(());
                }
                let object = objects & 1 == 1;
                match (next_token(bytes, &mut at)?, object) {
                    (b',', _) => {
                        at += 1;
                        if object {
                            at = name_and_colon(bytes, at)?;
                        }
                        break;
                    }
                    (b'}', true) | (b']', false) => {
                        at += 1;
                        objects >>= 1;
                        depth -= 1;
                        if depth >= 64 {
                            objects |= u64::from(self.open.pop()?) << 63;
                        }
                    }
                    _ => return None,
                }
            }
        }
    }

    /// Reads one value keeping what `rule` keeps, counted from [`pruned::MAX_KEPT_VALUES`] as
    /// `pruned::read` counts: the same [`Node`] it gives, or `None` past the count (serde's read
    /// then gives the error).
    pub fn read_kept(&mut self, rule: Keep) -> Option<Node<'a>> {
        self.left = pruned::MAX_KEPT_VALUES;
        self.kept(rule)
    }

    /// Reads one value keeping what `rule` keeps, within what is left of the count.
    fn kept(&mut self, rule: Keep) -> Option<Node<'a>> {
        self.left = self.left.checked_sub(rule.cost())?;
        let first = self.peek()?;
        match first {
            b'{' => self.kept_object(rule),
            b'[' => self.kept_array(rule),
            b'"' => {
                let quote = self.at;
                let (from, to, escaped) = self.string()?;
                match (escaped, rule) {
                    // Unescaping (surrogate pairs and all) is serde_json's.
                    (true, _) => pruned::from_str(&self.text[quote..self.at], rule).ok(),
                    (false, Keep::Text) => {
                        Some(Node::String(Cow::Borrowed(self.between_quotes(from, to)?)))
                    }
                    (false, _) => Some(Node::String(Cow::Borrowed(""))),
                }
            }
            b't' => self.literal(b"true").map(|()| Node::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Node::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Node::Null),
            _ => {
                // A number: its value as serde_json reads it (integer, float, or out of range).
                let from = self.at;
                self.number()?;
                pruned::from_str(&self.text[from..self.at], rule).ok()
            }
        }
    }

    fn kept_object(&mut self, rule: Keep) -> Option<Node<'a>> {
        let mut kept = KeptObject::new(rule);
        let mut first = true;
        while let Some(key) = self.member(first)? {
            first = false;
            match kept.member(Cow::Borrowed(key)) {
                Some(member) => {
                    self.left = self.left.checked_sub(member.extra)?;
                    let value = self.kept(member.rule)?;
                    kept.keep(member, value);
                }
                None => self.skip()?,
            }
        }
        Some(kept.into_node())
    }

    fn kept_array(&mut self, rule: Keep) -> Option<Node<'a>> {
        self.at += 1;
        let mut items = Vec::new();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(Node::Array(items));
        }
        loop {
            match rule {
                Keep::Items(item) => items.push(self.kept(*item)?),
                _ => self.skip()?,
            }
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(Node::Array(items));
                }
                _ => return None,
            }
        }
    }

    /// Reads one value as [`Self::read_kept`] reads it, accepting and refusing the same text,
    /// but writes what it keeps into `key` instead of building [`Node`]s; the value's text.
    pub fn read_key(&mut self, rule: Keep, key: &mut KeptKey) -> Option<&'a str> {
        self.left = pruned::MAX_KEPT_VALUES;
        self.peek()?;
        let from = self.at;
        self.key(rule, key)?;
        self.text.get(from..self.at)
    }

    /// [`Self::kept`], writing `key`.
    fn key(&mut self, rule: Keep, key: &mut KeptKey) -> Option<()> {
        self.left = self.left.checked_sub(rule.cost())?;
        let first = self.peek()?;
        match first {
            b'{' => return self.key_object(rule, key),
            b'[' => return self.key_array(rule, key),
            b'"' => {
                let quote = self.at;
                let (from, to, escaped) = self.string()?;
                let text = matches!(rule, Keep::Text);
                if escaped {
                    // Kept, it is unescaped by serde_json, which may refuse it (a lone surrogate).
                    let raw = self.text.get(quote..self.at)?;
                    pruned::from_str(raw, rule).ok()?;
                    if text {
                        key.text(tag::ESCAPED, raw);
                    } else {
                        key.tag(tag::SHAPE);
                    }
                } else if text {
                    key.text(tag::TEXT, self.between_quotes(from, to)?);
                } else {
                    key.tag(tag::SHAPE);
                }
            }
            b't' => self.literal(b"true").map(|()| key.tag(tag::TRUE))?,
            b'f' => self.literal(b"false").map(|()| key.tag(tag::FALSE))?,
            b'n' => self.literal(b"null").map(|()| key.tag(tag::NULL))?,
            _ => {
                let from = self.at;
                self.number()?;
                // Kept, serde_json reads it, which may refuse it (out of range).
                let raw = self.text.get(from..self.at)?;
                pruned::from_str(raw, rule).ok()?;
                key.text(tag::NUMBER, raw);
            }
        }
        Some(())
    }

    /// [`Self::kept_object`], writing `key`.
    fn key_object(&mut self, rule: Keep, key: &mut KeptKey) -> Option<()> {
        key.tag(tag::OBJECT);
        let mut first = true;
        while let Some(name) = self.member(first)? {
            first = false;
            match rule.member(name) {
                Some(kept) => {
                    self.left = self.left.checked_sub(kept.extra)?;
                    key.text(tag::MEMBER, name);
                    self.key(kept.rule, key)?;
                }
                None => self.skip()?,
            }
        }
        key.tag(tag::END);
        Some(())
    }

    /// [`Self::kept_array`], writing `key`.
    fn key_array(&mut self, rule: Keep, key: &mut KeptKey) -> Option<()> {
        self.at += 1;
        key.tag(tag::ARRAY);
        if self.peek()? != b']' {
            loop {
                match rule {
                    Keep::Items(item) => self.key(*item, key)?,
                    _ => self.skip()?,
                }
                match self.peek()? {
                    b',' => self.at += 1,
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.at += 1;
        key.tag(tag::END);
        Some(())
    }
}

/// The tags of a [`KeptKey`].
mod tag {
    pub const NULL: u8 = 0;
    pub const TRUE: u8 = 1;
    pub const FALSE: u8 = 2;
    /// A number: its text's length, then its text.
    pub const NUMBER: u8 = 3;
    /// A string kept as text, without escapes: its length, then its text.
    pub const TEXT: u8 = 4;
    /// A string kept as text, with escapes: its length, then its text as sent (quotes and all).
    pub const ESCAPED: u8 = 5;
    /// A string kept for its type only.
    pub const SHAPE: u8 = 6;
    /// An object: its kept members, each a [`MEMBER`] and a value, then [`END`].
    pub const OBJECT: u8 = 7;
    /// An array: its kept items, then [`END`].
    pub const ARRAY: u8 = 8;
    pub const END: u8 = 9;
    /// A member's name: its length, then its text.
    pub const MEMBER: u8 = 10;
}

/// What one read keeps, written by [`Reader::read_key`] as one run of bytes instead of
/// [`Node`]s: a tag before each kept value and member name, its length and text where it has
/// text, a tag closing each object and array. The bytes split back into one sequence of kept
/// values and names only, and the tree [`Reader::read_kept`] builds from a text is a function of
/// that sequence: two texts whose keys are equal read into equal trees. (Equal trees need not
/// have equal keys: `"\u0041"` and `"A"`, a member given twice.) Past its limit nothing more is
/// written, and the key stands for nothing.
#[derive(Debug, Clone)]
pub struct KeptKey {
    bytes: Vec<u8>,
    limit: usize,
    over: bool,
}

impl KeptKey {
    /// An empty key of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(limit.min(KEY_CAPACITY)),
            limit,
            over: false,
        }
    }

    /// The heap the key holds (what its bytes have room for).
    pub fn heap(&self) -> usize {
        self.bytes.capacity()
    }

    /// The heap the key holds shared through an `Arc`: the key, the `Arc`'s two counts, and
    /// its bytes.
    pub fn shared_bytes(&self) -> usize {
        size_of::<Self>() + 2 * size_of::<usize>() + self.heap()
    }

    /// The bytes written, or `None` once they would have passed the limit.
    pub fn bytes(&self) -> Option<&[u8]> {
        (!self.over).then_some(&self.bytes)
    }

    #[inline(always)]
    fn tag(&mut self, tag: u8) {
        self.over |= self.bytes.len() >= self.limit;
        if !self.over {
            self.bytes.push(tag);
        }
    }

    #[inline(always)]
    fn text(&mut self, tag: u8, text: &str) {
        // The tag, at most ten bytes of length, the text.
        self.over |= self.bytes.len() + 11 + text.len() > self.limit;
        if !self.over {
            self.bytes.push(tag);
            write_length(&mut self.bytes, text.len());
            self.bytes.extend_from_slice(text.as_bytes());
        }
    }

    /// The tree the key stands for, read by `rule` (the rule it was written by) as
    /// [`Reader::read_kept`] reads the text it was written from, but without walking that text
    /// again: only what was kept is read, and its strings are copied out of the key. `None`
    /// past the key's limit.
    pub fn tree(&self, rule: Keep) -> Option<Node<'static>> {
        let mut read = KeyReader {
            bytes: self.bytes()?,
            at: 0,
        };
        let tree = read.value(rule)?;
        (read.at == read.bytes.len()).then_some(tree)
    }
}

/// A [`KeptKey`]'s bytes read back in the order they were written. Only keys this module wrote
/// are read, but anything else gives `None`, never a panic.
struct KeyReader<'k> {
    bytes: &'k [u8],
    at: usize,
}

impl<'k> KeyReader<'k> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    /// A length as [`write_length`] writes it, then that many bytes of text.
    fn text(&mut self) -> Option<&'k str> {
        let mut length = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let byte = self.byte()?;
            length |= usize::from(byte & 0x7f).checked_shl(shift)?;
            if byte < 0x80 {
                let text = self.bytes.get(self.at..self.at.checked_add(length)?)?;
                self.at += length;
                return std::str::from_utf8(text).ok();
            }
        }
        None
    }

    /// One value kept by `rule`, as [`Reader::kept`] gives it.
    fn value(&mut self, rule: Keep) -> Option<Node<'static>> {
        Some(match self.byte()? {
            tag::NULL => Node::Null,
            tag::TRUE => Node::Bool(true),
            tag::FALSE => Node::Bool(false),
            // Read by serde_json, as `kept` reads them.
            tag::NUMBER | tag::ESCAPED => pruned::from_str(self.text()?, rule).ok()?.into_owned(),
            tag::TEXT => Node::String(Cow::Owned(self.text()?.to_owned())),
            tag::SHAPE => Node::String(Cow::Borrowed("")),
            tag::OBJECT => {
                let mut kept = KeptObject::new(rule);
                while self.bytes.get(self.at) != Some(&tag::END) {
                    if self.byte()? != tag::MEMBER {
                        return None;
                    }
                    let member = kept.member_copied(self.text()?)?;
                    let value = self.value(member.rule)?;
                    kept.keep(member, value);
                }
                self.at += 1;
                kept.into_node()
            }
            tag::ARRAY => {
                let mut items = Vec::new();
                while self.bytes.get(self.at) != Some(&tag::END) {
                    let Keep::Items(item) = rule else {
                        return None;
                    };
                    items.push(self.value(*item)?);
                }
                self.at += 1;
                Node::Array(items)
            }
            _ => return None,
        })
    }
}

/// Room for the key of a typical pod, so that it is seldom grown.
const KEY_CAPACITY: usize = 4096;

/// The byte at `at` after whitespace, without taking it; `at` moves past the whitespace.
#[inline(always)]
fn next_token(bytes: &[u8], at: &mut usize) -> Option<u8> {
    // The API server sends compact JSON: the next byte is seldom whitespace.
    match bytes.get(*at) {
        Some(&byte) if byte > b' ' => Some(byte),
        _ => {
            while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(*at) {
                *at += 1;
            }
            bytes.get(*at).copied()
        }
    }
}

/// After `{` or `,` in a skipped object: a member name (any string) and its `:`; the position
/// after the colon.
#[inline(always)]
fn name_and_colon(bytes: &[u8], mut at: usize) -> Option<usize> {
    if next_token(bytes, &mut at)? != b'"' {
        return None;
    }
    at = string_end(bytes, at + 1)?.0 + 1;
    (next_token(bytes, &mut at)? == b':').then_some(at + 1)
}

/// The closing quote of a string whose content starts at `from`, and whether the string holds
/// an escape. Checks what `serde_json` checks of a string it skips: no control characters, and
/// escapes among `\" \\ \/ \b \f \n \r \t \uXXXX`.
#[inline(always)]
fn string_end(bytes: &[u8], from: usize) -> Option<(usize, bool)> {
    let at = from + next_escaped(bytes.get(from..)?)?;
    if bytes[at] == b'"' {
        return Some((at, false));
    }
    escaped_string_end(bytes, at).map(|to| (to, true))
}

/// The rest of [`string_end`] from `at`, the first byte JSON escapes, when that is not the
/// closing quote: kept out of line, as few strings of a pod hold an escape (mostly
/// `managedFields` keys such as `k:{\"name\":\"app\"}`). Each escape is checked, and the run up
/// to the next byte JSON escapes is passed over as [`string_end`] passes it.
#[cold]
fn escaped_string_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        match *bytes.get(at)? {
            b'"' => return Some(at),
            b'\\' => {
                at += match bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    b'u' => {
                        let hex = bytes.get(at + 2..at + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        6
                    }
                    _ => return None,
                };
                at += next_escaped(bytes.get(at..)?)?;
            }
            // A control character.
            _ => return None,
        }
    }
}

/// Appends a length or a count, seven bits a byte, low bits first, the high bit set on every byte
/// but the last (LEB128): one byte for most, and no two lengths written the same.
pub fn write_length(out: &mut Vec<u8>, mut length: usize) {
    while length >= 0x80 {
        out.push(length as u8 | 0x80);
        length >>= 7;
    }
    out.push(length as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pruned::{KEPT, MAX_KEPT_VALUES};

    /// The fast read of `text` as a whole value, or `None`.
    fn fast(text: &str, rule: Keep) -> Option<Node<'_>> {
        let mut reader = Reader::new(text);
        let node = reader.read_kept(rule)?;
        reader.at_end().then_some(node)
    }

    #[test]
    fn what_it_reads_it_reads_as_serde_json_and_what_it_refuses_it_leaves_to_it() {
        let cases = [
            r#"{"metadata": {"name": "web", "labels": {"kvinject.io/inject": "true", "a": "b"}}}"#,
            r#"{"metadata": {"name": "w\u00e9b\n", "annotations": {"kvinject.io/env.A": "x\"y"}}}"#,
            r#"{"metadata": {"name": 12, "namespace": -0.5e+3, "generateName": 18446744073709551616}}"#,
            r#"{"metadata": {"annotations": {"kvinject.io/vault": 1e400}}}"#,
            r#"{"metadata": {"name": "\ud800"}}"#,
            r#"{"spec": {"x": "\ud800", "y": [1, -0, 0.5, true, false, null, {"a": [{}]}, []]}}"#,
            r#"{"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "v"}]}, {"name": "b"}]}}"#,
            r#"{"spec": {"containers": {"name": "not an array"}, "volumes": "not an array"}}"#,
            r#"{"metadata": {"name": "a", "name": "b"}, "metadata": {"namespace": "c"}}"#,
            r#"{"n\u0061me": 1}"#,
            r#" { "spec" : { "x" : [ ] , "y" : { } } } "#,
            r#"{"spec": {"x": 01}}"#,
            r#"{"spec": {"x": 1.}}"#,
            r#"{"spec": {"x": 1e}}"#,
            r#"{"spec": {"x": -}}"#,
            r#"{"spec": {"x": tru}}"#,
            r#"{"spec": {"x": [1,]}}"#,
            r#"{"spec": {"x": {"a": 1,}}}"#,
            r#"{"spec": {"x": {"a" 1}}}"#,
            r#"{"spec": {"x": [}}"#,
            r#"{"spec": {"x": "tab	in a string"}}"#,
            r#"{"spec": {"x": "bad \q escape"}}"#,
            r#"{"spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}}}}}"#,
            r#"{"metadata": {"annotations": {"a": "a long text before \"an escape\" and after"}}}"#,
            r#"{"spec": {"x": "\"then	a tab"}}"#,
            r#"{"spec": {"x": "\"then the end"#,
            r#"{"spec": {"x": "\"#,
            r#"{"spec": {"x": "\u12"}}"#,
            r#"{"spec": {"x": 1} trailing"#,
            r#"{"spec": {"x": 1}"#,
            r#"[1, 2]"#,
            r#""text""#,
        ];
        for text in cases {
            let slow = pruned::from_str(text, KEPT).ok();
            // Writing the key instead accepts and refuses the same texts.
            assert_eq!(
                keyed(text, KEPT).is_some(),
                fast(text, KEPT).is_some(),
                "{text}"
            );
            let fast = fast(text, KEPT);
            if let Some(fast) = &fast {
                assert_eq!(Some(fast), slow.as_ref(), "{text}");
            }
            // Anything serde_json refuses, the fast path refuses too.
            if slow.is_none() {
                assert!(fast.is_none(), "{text}");
            }
        }
        // The common cases are read here, not left to serde_json.
        assert!(fast(cases[0], KEPT).is_some());
        assert!(fast(cases[6], KEPT).is_some());
        assert!(fast(cases[5], KEPT).is_some());
        // So are strings with escapes, skipped (a `managedFields` key) or kept.
        for text in &cases[22..24] {
            assert!(text.contains("\\\""), "{text}");
            assert!(fast(text, KEPT).is_some(), "{text}");
        }
    }

    /// The key [`Reader::read_key`] writes of `text` as a whole value, or `None`; checks that
    /// the key reads back into the tree [`Reader::read_kept`] reads.
    fn keyed(text: &str, rule: Keep) -> Option<Vec<u8>> {
        let mut reader = Reader::new(text);
        let mut key = KeptKey::new(usize::MAX);
        let read = reader.read_key(rule, &mut key)?;
        assert_eq!(read, text[..reader.at].trim_start(), "the value's text");
        let tree = key.tree(rule).expect("a key within its limit reads back");
        assert_eq!(Some(tree), Reader::new(text).read_kept(rule), "{text}");
        reader.at_end().then(|| key.bytes().unwrap().to_vec())
    }

    #[test]
    fn texts_with_equal_keys_read_into_equal_trees() {
        // Texts that differ in what is kept, in what is not, and in how: each pair with equal
        // keys must read into equal trees, and each pair that reads into different trees must
        // have different keys.
        let texts = [
            r#"{"metadata": {"name": "web"}}"#,
            r#"{"metadata": {"name": "web", "uid": "skipped"}}"#,
            r#"{"metadata": {"name": "we", "b": 1}}"#,
            r#"{"metadata": {"name": "w\u0065b"}}"#,
            r#"{"metadata": {"name": "web", "name": "web"}}"#,
            r#"{"metadata": {"generateName": "web"}}"#,
            r#"{"metadata": {"labels": {"kvinject.io/inject": "true"}}}"#,
            r#"{"metadata": {"labels": {"kvinject.io/inject": "true", "app": "web"}}}"#,
            r#"{"metadata": {"labels": {"kvinject.io/inject": "tru", "e": "x"}}}"#,
            r#"{"metadata": {"labels": {"kvinject.io/injec": "ttrue"}}}"#,
            r#"{"metadata": {"annotations": {"kvinject.io/env.A": "x"}}}"#,
            r#"{"metadata": {"annotations": {"kvinject.io/env.B": "x"}}}"#,
            r#"{"metadata": {"annotations": {"kvinject.io/env.A": "x", "kvinject.io/env.A": "y"}}}"#,
            r#"{"metadata": {"labels": {}}}"#,
            r#"{"metadata": {"labels": []}}"#,
            r#"{"metadata": {"labels": "x"}}"#,
            r#"{"metadata": {"labels": null}}"#,
            r#"{"metadata": {"labels": false}}"#,
            r#"{"metadata": {"labels": true}}"#,
            r#"{"metadata": {"labels": 0}}"#,
            r#"{"metadata": {"labels": 0.0}}"#,
            r#"{"metadata": {"labels": -0}}"#,
            r#"{"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}"#,
            r#"{"spec": {"containers": [{"name": "a", "name": "b"}]}}"#,
            r#"{"spec": {"containers": [{"name": "ab"}]}}"#,
            r#"{"spec": {"containers": [{"name": "a"}], "volumes": [{"name": "b"}]}}"#,
            r#"{"spec": {"containers": [{"name": "a"}, {}], "volumes": []}}"#,
            r#"{"spec": {"containers": [{"env": [{"name": "A", "value": "x"}]}]}}"#,
            r#"{"spec": {"containers": [{"env": [{"name": "A", "value": "y"}]}]}}"#,
            r#"{"spec": {"containers": [{"env": [{"name": "A", "value": "\n"}]}]}}"#,
            r#"{"spec": {"containers": [{"env": [{"name": "A", "value": 1}]}]}}"#,
            r#"{"spec": {"containers": [{"env": [{"name": "A"}]}]}}"#,
            r#"{"spec": {"x": [1, 2], "containers": []}}"#,
            r#"{"spec": {"containers": []}}"#,
            r#"{"spec": {"containers": [[]]}}"#,
            r#"{"spec": {"containers": [{}]}}"#,
            r#"{"spec": {}}"#,
            r#"{}"#,
            r#"[]"#,
            r#""a""#,
            r#"1"#,
            r#"null"#,
        ];
        let read: Vec<_> = texts
            .iter()
            .map(|text| {
                (
                    keyed(text, KEPT).expect(text),
                    fast(text, KEPT).expect(text),
                )
            })
            .collect();
        for (a, (key_a, tree_a)) in texts.iter().zip(&read) {
            for (b, (key_b, tree_b)) in texts.iter().zip(&read) {
                if key_a == key_b {
                    assert_eq!(tree_a, tree_b, "{a} / {b}");
                }
            }
        }
        // What is skipped is not in the key; what is kept is, names and all.
        assert_eq!(read[0].0, read[1].0);
        assert_ne!(read[0].0, read[2].0);
        let annotated = texts.iter().position(|t| t.contains("env.A")).unwrap();
        assert_ne!(read[annotated].0, read[annotated + 1].0);
    }

    #[test]
    fn a_key_past_its_limit_stands_for_nothing() {
        let text = format!(r#"{{"metadata": {{"name": "{}"}}}}"#, "a".repeat(100));
        let whole = keyed(&text, KEPT).unwrap();
        for limit in [0, 1, 50, whole.len() - 1, whole.len(), whole.len() + 10] {
            let mut key = KeptKey::new(limit);
            let mut reader = Reader::new(&text);
            // The text is still read and checked whole.
            assert!(reader.read_key(KEPT, &mut key).is_some());
            assert!(reader.at_end());
            match key.bytes() {
                Some(bytes) => assert_eq!(bytes, whole, "{limit}"),
                None => assert!(limit < whole.len() + 11, "{limit}"),
            }
            assert!(key.bytes.len() <= limit, "{limit}");
        }
    }

    #[test]
    fn skipped_nesting_does_not_recurse() {
        let deep = format!(
            r#"{{"spec": {{"x": {}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(fast(&deep, KEPT), pruned::from_str(&deep, KEPT).ok());
        let unbalanced = format!(r#"{{"spec": {{"x": {}}}}}"#, "[{".repeat(1000));
        assert_eq!(fast(&unbalanced, KEPT), None);
        // Objects and arrays alternating, 150 deep, and each close swapped in turn for the other
        // kind: every close must match what it closes, at any depth.
        let levels = 150;
        let closes: Vec<&str> = (0..levels).map(|i| ["]", "}"][i % 2]).collect();
        let text = |closes: &[&str]| {
            format!(
                r#"{{"spec": {{"x": {}1{}}}}}"#,
                "{\"a\":[".repeat(levels / 2),
                closes.concat()
            )
        };
        assert!(fast(&text(&closes), KEPT).is_some());
        for swapped in [0, 1, 62, 63, 64, 65, 66, 127, 128, 129, levels - 1] {
            let mut wrong = closes.clone();
            wrong[swapped] = ["}", "]"][swapped % 2];
            assert_eq!(fast(&text(&wrong), KEPT), None, "close {swapped} swapped");
            assert!(pruned::from_str(&text(&wrong), KEPT).is_err());
        }
    }

    #[test]
    fn past_max_kept_values_the_read_is_left_to_serde() {
        // The object (1 field) 2, `containers` 1 and its items 1 each: the last one of these two
        // is one too many.
        for (items, kept) in [(MAX_KEPT_VALUES - 3, true), (MAX_KEPT_VALUES - 2, false)] {
            let text = format!(r#"{{"containers": [{}1]}}"#, "1,".repeat(items - 1));
            let rule = Keep::Fields(&[("containers", Keep::Items(&Keep::Shape))]);
            assert_eq!(fast(&text, rule).is_some(), kept, "{items} items");
            assert_eq!(pruned::from_str(&text, rule).is_ok(), kept, "{items} items");
        }
    }
}
