//! The JSON the core reads: a pod, or a workload, as a small tree of [`Node`]s.
//!
//! The admission path builds it straight from the request bytes keeping only the fields the core
//! reads ([`crate::core::pruned`]); offline `inject` and tests convert a whole
//! `serde_json::Value` ([`Node::from`]). Unlike a `Value` with `preserve_order`, an object is a
//! plain list of members: no hash map per object, no SipHash per key, and the member names the
//! schema knows are `&'static str`, not an allocation each. Strings and names are borrowed from
//! what was read (`'a`) wherever they appear there as they are (no escape to undo).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Index;

use serde_json::{Map, Number, Value};

/// An object member's name: the schema's own `&'static str` when it names the member, else
/// borrowed from what was read, or owned when it held an escape.
pub type Key<'a> = Cow<'a, str>;

/// Objects up to this many members are checked for a repeated name by comparing names; larger
/// ones through a hash map, so a forged object of many members costs linear time.
const COMPARED_MEMBERS: usize = 8;

/// One JSON value.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object: each name once, in the order first seen, with the value last given (as
    /// `serde_json` reads an object whose member names repeat).
    Object(Vec<(Key<'a>, Node<'a>)>),
}

static NULL: Node<'static> = Node::Null;

impl<'a> Node<'a> {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(text) => Some(text),
            _ => None,
        }
    }

    /// The items, if this is an array.
    pub fn as_array(&self) -> Option<&[Node<'a>]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The members, if this is an object.
    pub fn as_object(&self) -> Option<&[(Key<'a>, Node<'a>)]> {
        match self {
            Self::Object(members) => Some(members),
            _ => None,
        }
    }

    /// Whether this is an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Self::Object(_))
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.as_object()?
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    /// Each member of an object as (name, value); nothing for other values.
    pub fn members(&self) -> impl Iterator<Item = (&str, &Node<'a>)> {
        self.as_object()
            .unwrap_or_default()
            .iter()
            .map(|(name, value)| (name.as_ref(), value))
    }

    /// The same value as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Number(n) => Value::Number(n.clone()),
            Self::String(s) => Value::String(s.to_string()),
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }

    /// The same value owning every string: it outlives what it was read from.
    pub fn into_owned(self) -> Node<'static> {
        let owned = |text: Cow<'a, str>| Cow::Owned(text.into_owned());
        match self {
            Self::Null => Node::Null,
            Self::Bool(b) => Node::Bool(b),
            Self::Number(n) => Node::Number(n),
            Self::String(s) => Node::String(owned(s)),
            Self::Array(items) => Node::Array(items.into_iter().map(Node::into_owned).collect()),
            Self::Object(members) => Node::Object(
                members
                    .into_iter()
                    .map(|(name, value)| (owned(name), value.into_owned()))
                    .collect(),
            ),
        }
    }
}

impl<'a> From<&'a Value> for Node<'a> {
    /// The whole value, its strings borrowed (a `Value`'s object has each name once already).
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Number(n.clone()),
            Value::String(s) => Self::String(Cow::Borrowed(s)),
            Value::Array(items) => Self::Array(items.iter().map(Self::from).collect()),
            Value::Object(members) => Self::Object(
                members
                    .iter()
                    .map(|(name, value)| (Key::Borrowed(name.as_str()), Self::from(value)))
                    .collect(),
            ),
        }
    }
}

/// `&node[key]`: the member, `null` when absent or not an object.
impl<'a> Index<&str> for Node<'a> {
    type Output = Node<'a>;

    fn index(&self, key: &str) -> &Node<'a> {
        self.get(key).unwrap_or(&NULL)
    }
}

impl PartialEq<str> for Node<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for Node<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<bool> for Node<'_> {
    fn eq(&self, other: &bool) -> bool {
        matches!(self, Self::Bool(b) if b == other)
    }
}

/// The members of an object being read, each name once (see [`Node::Object`]): a name given
/// again replaces the value in place, so a forged object repeating one name a million times
/// holds one member, not a million.
#[derive(Debug, Default)]
pub struct Members<'a> {
    list: Vec<(Key<'a>, Node<'a>)>,
    /// Where each name is, once the object has more than [`COMPARED_MEMBERS`] members.
    index: Option<HashMap<String, usize>>,
}

impl<'a> Members<'a> {
    /// Room for `capacity` members, allocated at the first one.
    pub fn reserve(&mut self, capacity: usize) {
        self.list
            .reserve_exact(capacity.saturating_sub(self.list.len()));
    }

    /// Whether no member has been added yet.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Adds a member, or gives a member of that name its new value.
    pub fn insert(&mut self, name: Key<'a>, value: Node<'a>) {
        let found = match &self.index {
            Some(index) => index.get(name.as_ref()).copied(),
            None => self.list.iter().position(|(n, _)| *n == name),
        };
        match found {
            Some(at) => self.list[at].1 = value,
            None => self.push_new(name, value),
        }
    }

    /// Adds a member the caller knows is not there yet (a schema field seen for the first time).
    pub fn push_new(&mut self, name: Key<'a>, value: Node<'a>) {
        if self.index.is_none() && self.list.len() == COMPARED_MEMBERS {
            let index = self.list.iter().enumerate();
            self.index = Some(index.map(|(i, (n, _))| (n.to_string(), i)).collect());
        }
        if let Some(index) = &mut self.index {
            index.insert(name.to_string(), self.list.len());
        }
        self.list.push((name, value));
    }

    /// The object.
    pub fn into_node(self) -> Node<'a> {
        Node::Object(self.list)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(s: &str) -> Node<'static> {
        Node::String(Cow::Owned(s.to_owned()))
    }

    #[test]
    fn repeated_names_keep_the_first_place_and_the_last_value_as_serde_json_does() {
        for count in [3, COMPARED_MEMBERS, COMPARED_MEMBERS + 5] {
            let mut members = Members::default();
            let mut json = String::from("{");
            for i in 0..count {
                members.insert(Key::Owned(format!("k{i}")), text(&i.to_string()));
                json.push_str(&format!("\"k{i}\":\"{i}\","));
            }
            for _ in 0..1000 {
                members.insert(Key::Borrowed("k1"), text("late"));
            }
            members.insert(Key::Borrowed("k0"), text("later"));
            json.push_str(r#""k1":"late","k0":"later"}"#);
            let node = members.into_node();
            assert_eq!(node.as_object().unwrap().len(), count, "{count}");
            // serde_json reads the same text the same way.
            let value: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(node.to_value().to_string(), value.to_string(), "{count}");
        }
    }

    #[test]
    fn reading_a_node_is_reading_the_value() {
        let value = json!({"metadata": {"name": "web", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "app"}], "n": 3, "ok": true}});
        let node = Node::from(&value);
        assert_eq!(node.to_value(), value);
        assert_eq!(node["metadata"]["name"], "web");
        assert!(node["spec"]["ok"] == true);
        assert!(node["spec"]["missing"]["deeper"].is_null());
        assert_eq!(node["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(
            node["metadata"]["labels"].members().collect::<Vec<_>>(),
            vec![("a", &text("b"))]
        );
        assert_eq!(node["spec"]["n"].as_str(), None);
    }
}
