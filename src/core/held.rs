//! About the bytes a remembered value holds, for the bounds on what kvinject remembers: a
//! value's heap (the length of its strings and lists, not their spare capacity), to which its
//! holder adds the value's own size. A measure, not an accounting: what the allocator adds is
//! left to the bounds' margins.

/// The heap a value owns, in bytes.
pub trait Held {
    /// The heap it owns: every string's length, every list's items (their size and heap).
    fn heap(&self) -> usize;
}

impl Held for String {
    fn heap(&self) -> usize {
        self.len()
    }
}

impl Held for &'static str {
    /// A name of kvinject's own, held in the binary.
    fn heap(&self) -> usize {
        0
    }
}

impl Held for std::sync::Arc<str> {
    /// The text and the two counts the `Arc` keeps with it.
    fn heap(&self) -> usize {
        self.len() + 2 * size_of::<usize>()
    }
}

impl<T: Held> Held for Option<T> {
    fn heap(&self) -> usize {
        self.as_ref().map_or(0, Held::heap)
    }
}

impl<T: Held> Held for [T] {
    fn heap(&self) -> usize {
        self.iter().map(|item| size_of::<T>() + item.heap()).sum()
    }
}

impl<T: Held> Held for Vec<T> {
    fn heap(&self) -> usize {
        self.as_slice().heap()
    }
}

impl<A: Held, B: Held> Held for (A, B) {
    fn heap(&self) -> usize {
        self.0.heap() + self.1.heap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_count_their_length_and_lists_their_items() {
        assert_eq!("abc".to_owned().heap(), 3);
        assert_eq!(None::<String>.heap(), 0);
        assert_eq!(Some("abcd".to_owned()).heap(), 4);
        assert_eq!(vec!["static"].heap(), size_of::<&str>());
        let shared: std::sync::Arc<str> = "abc".into();
        assert_eq!(shared.heap(), 3 + 2 * size_of::<usize>());
        let list = vec!["a".to_owned(), "bc".to_owned()];
        assert_eq!(list.heap(), 2 * size_of::<String>() + 3);
        let pairs = vec![("a".to_owned(), "bc".to_owned())];
        assert_eq!(pairs.heap(), size_of::<(String, String)>() + 3);
    }
}
