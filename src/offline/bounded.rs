//! YAML into JSON values within a memory budget.
//!
//! YAML aliases let a few KiB of text stand for gigabytes (each alias replays its anchor's
//! whole subtree, and aliases of aliases multiply). The parser replays them while the document
//! is deserialized, so the only place to stop one is while the values are built: this seed
//! charges every node and string it builds against a budget and fails when it runs out, before
//! the memory is taken.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// What one node costs besides its text: about what a `serde_json::Value` takes in memory.
const NODE_COST: usize = 64;

/// Builds a `serde_json::Value`, charging `budget` for every node and string.
#[derive(Clone, Copy)]
pub struct BoundedValue<'a> {
    budget: &'a Cell<usize>,
    limit: usize,
}

impl<'a> BoundedValue<'a> {
    /// A seed drawing on `budget` (bytes), which started at `limit`.
    pub fn new(budget: &'a Cell<usize>, limit: usize) -> Self {
        Self { budget, limit }
    }

    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let cost = bytes.saturating_add(NODE_COST);
        match self.budget.get().checked_sub(cost) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "the document expands to more than {} MiB (YAML aliases repeat what they name); \
                 write it out without anchors and aliases",
                self.limit / (1024 * 1024)
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(0)?;
        // As serde_json does: infinities and NaN have no JSON number.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Value::String(key) => key,
                // YAML allows any scalar as a key; JSON (and Kubernetes) only strings.
                other => other.to_string(),
            };
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde::de::DeserializeSeed;

    use super::BoundedValue;

    fn read(text: &str, limit: usize) -> Result<serde_json::Value, String> {
        let budget = Cell::new(limit);
        let document = serde_yaml_ng::Deserializer::from_str(text);
        BoundedValue::new(&budget, limit)
            .deserialize(document)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ordinary_documents_read_as_json() {
        let value = read("a: 1\nb: [true, null, x, 1.5]\nc: {d: e}\n", 1 << 20).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"a": 1, "b": [true, null, "x", 1.5], "c": {"d": "e"}})
        );
    }

    #[test]
    fn an_alias_bomb_stops_at_the_budget() {
        // 2,000 aliases of a 2,000-item list: 4 million strings from 14 KB of text, within
        // the parser's own repetition limit (a hundred replays per event).
        let items = vec!["x"; 2000].join(", ");
        let aliases = vec!["*a"; 2000].join(", ");
        let text = format!("a: &a [{items}]\nb: [{aliases}]\n");
        let error = read(&text, 16 << 20).unwrap_err();
        assert!(error.contains("expands to more than 16 MiB"), "{error}");
    }
}
