//! The object of an admission request, read straight from the request bytes keeping only the
//! fields the core reads.
//!
//! A pod or workload can carry megabytes kvinject never looks at (`managedFields`, images,
//! probes, a forged field of millions of numbers). Built as a whole tree, that costs memory and
//! time in proportion to the body; read through [`KEPT`], it costs what kvinject reads.
//!
//! What is dropped can never change a decision or a patch:
//! - a dropped field is one no code of the core reads (the schema below lists every one it does);
//! - array items are never dropped, so the indexes in JSON Patch paths stay those of the object
//!   as received;
//! - a value of another type than the schema expects keeps its JSON type (an object becomes
//!   `{}`, an array `[]`, a string `""`): the core reads such a value only for its type.
//!
//! `tests/pruned.rs` checks that every fixture gets the same answer read pruned or whole.
//!
//! Kept values are counted: an item of a kept array is kept whatever it holds (the indexes
//! again), so `[0,0,0,…]` sent where containers belong would cost a 32-byte [`Node`] for every
//! two bytes sent. A read keeps at most [`MAX_KEPT_VALUES`] and fails past them.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use crate::core::annotations::{AAD_POD_IDENTITY_LABEL, MIRROR_POD, PREFIX};
use crate::core::node::{Key as Name, Members, Node};

/// What one read keeps at most, counted as [`Keep::cost`] and [`Member::extra`] count: each
/// kept value one, an object read by fields one more per field (its member list is reserved for
/// all of them), a label or annotation kept two more (its own key and its index entry). So a
/// count is at most about 64 bytes held, the kept strings (bounded by the body) aside. The large
/// review of `bench/bodies.rs` (50 full containers) counts 2,765, the typical 117.
pub const MAX_KEPT_VALUES: usize = 100_000;

/// The start of the error of a read past [`MAX_KEPT_VALUES`].
pub const TOO_MANY_VALUES: &str = "too many values kept";

/// What of a JSON value is kept.
#[derive(Clone, Copy)]
pub enum Keep {
    /// Strings and other scalars as they are.
    Text,
    /// Only the JSON type (the core checks presence, never the content).
    Shape,
    /// An object: these fields, each by its own rule; every other field is dropped.
    Fields(&'static [(&'static str, Keep)]),
    /// An array: every item, by the rule.
    Items(&'static Keep),
    /// An object of strings: only the entries whose key passes.
    Keys(fn(&str) -> bool),
}

/// How an object read by a rule keeps one of its members.
#[derive(Clone, Copy)]
pub struct KeptMember {
    /// The schema's field (its place and name) when the rule is `Fields`.
    pub field: Option<(usize, &'static str)>,
    /// How its value is read.
    pub rule: Keep,
    /// What keeping it counts against [`MAX_KEPT_VALUES`] besides its value.
    pub extra: usize,
}

impl Keep {
    /// How an object read by this rule keeps its member `name`; `None` when its value is
    /// skipped.
    #[inline(always)]
    pub fn member(self, name: &str) -> Option<KeptMember> {
        match self {
            Keep::Fields(fields) => {
                let (at, (field, rule)) =
                    fields.iter().enumerate().find(|(_, (f, _))| *f == name)?;
                Some(KeptMember {
                    field: Some((at, field)),
                    rule: *rule,
                    extra: 0,
                })
            }
            Keep::Keys(keep) => keep(name).then_some(KeptMember {
                field: None,
                rule: Keep::Text,
                extra: 2,
            }),
            _ => None,
        }
    }

    /// What keeping one value by this rule counts against [`MAX_KEPT_VALUES`].
    pub fn cost(self) -> usize {
        match self {
            Self::Fields(fields) => 1 + fields.len(),
            _ => 1,
        }
    }
}

/// Takes `count` off what a read may still keep; the read's error past [`MAX_KEPT_VALUES`].
fn charge<E: serde::de::Error>(left: &Cell<usize>, count: usize) -> Result<(), E> {
    let Some(rest) = left.get().checked_sub(count) else {
        return Err(E::custom(format_args!(
            "{TOO_MANY_VALUES}: more than {MAX_KEPT_VALUES} in the fields kvinject reads"
        )));
    };
    left.set(rest);
    Ok(())
}

fn kept_annotation(key: &str) -> bool {
    key.starts_with(PREFIX) || key == MIRROR_POD
}

fn kept_label(key: &str) -> bool {
    key.starts_with(PREFIX) || key == AAD_POD_IDENTITY_LABEL
}

const METADATA: Keep = Keep::Fields(&[
    ("name", Keep::Text),
    ("generateName", Keep::Text),
    ("namespace", Keep::Text),
    ("labels", Keep::Keys(kept_label)),
    ("annotations", Keep::Keys(kept_annotation)),
    (
        "ownerReferences",
        // kind and name for logs; apiVersion, uid and controller for the denial Events.
        Keep::Items(&Keep::Fields(&[
            ("apiVersion", Keep::Text),
            ("kind", Keep::Text),
            ("name", Keep::Text),
            ("uid", Keep::Text),
            ("controller", Keep::Text),
        ])),
    ),
]);

const NAMED: &[(&str, Keep)] = &[("name", Keep::Text), ("key", Keep::Text)];

const CONTAINER: Keep = Keep::Fields(&[
    ("name", Keep::Text),
    (
        "env",
        Keep::Items(&Keep::Fields(&[
            ("name", Keep::Text),
            ("value", Keep::Shape),
            (
                "valueFrom",
                Keep::Fields(&[("secretKeyRef", Keep::Fields(NAMED))]),
            ),
        ])),
    ),
    (
        "volumeMounts",
        Keep::Items(&Keep::Fields(&[
            ("name", Keep::Text),
            ("mountPath", Keep::Text),
        ])),
    ),
]);

const VOLUME: Keep = Keep::Fields(&[
    ("name", Keep::Text),
    (
        "csi",
        Keep::Fields(&[
            ("driver", Keep::Text),
            (
                "volumeAttributes",
                Keep::Fields(&[("secretProviderClass", Keep::Text)]),
            ),
        ]),
    ),
]);

const POD_SPEC: &[(&str, Keep)] = &[
    ("serviceAccountName", Keep::Text),
    ("serviceAccount", Keep::Text),
    ("volumes", Keep::Items(&VOLUME)),
    ("containers", Keep::Items(&CONTAINER)),
    ("initContainers", Keep::Items(&CONTAINER)),
];

const TEMPLATE: Keep = Keep::Fields(&[("metadata", METADATA), ("spec", Keep::Fields(POD_SPEC))]);

/// A Pod, or a workload with its pod template (`spec.template`, a CronJob's
/// `spec.jobTemplate.spec.template`): their fields never share a name, so one schema reads both.
pub const KEPT: Keep = Keep::Fields(&[
    ("apiVersion", Keep::Text),
    ("kind", Keep::Text),
    ("metadata", METADATA),
    (
        "spec",
        Keep::Fields(&[
            POD_SPEC[0],
            POD_SPEC[1],
            POD_SPEC[2],
            POD_SPEC[3],
            POD_SPEC[4],
            ("template", TEMPLATE),
            (
                "jobTemplate",
                Keep::Fields(&[("spec", Keep::Fields(&[("template", TEMPLATE)]))]),
            ),
        ]),
    ),
]);

/// Reads one value from `deserializer` keeping what `rule` keeps, at most [`MAX_KEPT_VALUES`]
/// values.
pub fn read<'de, D: Deserializer<'de>>(deserializer: D, rule: Keep) -> Result<Node<'de>, D::Error> {
    let left = Cell::new(MAX_KEPT_VALUES);
    Seed { rule, left: &left }.deserialize(deserializer)
}

/// A rule, and how many more values the read may keep.
#[derive(Clone, Copy)]
struct Seed<'a> {
    rule: Keep,
    left: &'a Cell<usize>,
}

impl<'a> Seed<'a> {
    /// The same count for another rule.
    fn with(self, rule: Keep) -> Seed<'a> {
        Seed { rule, ..self }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        charge(self.left, self.rule.cost())?;
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(match self.rule {
            Keep::Text => Cow::Borrowed(v),
            _ => Cow::Borrowed(""),
        }))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(match self.rule {
            Keep::Text => Cow::Owned(v.to_owned()),
            _ => Cow::Borrowed(""),
        }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        match self.rule {
            Keep::Items(rule) => {
                while let Some(item) = seq.next_element_seed(self.with(*rule))? {
                    items.push(item);
                }
            }
            _ => while seq.next_element::<IgnoredAny>()?.is_some() {},
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut kept = KeptObject::new(self.rule);
        while let Some(Key(key)) = map.next_key()? {
            match kept.member(key) {
                Some(member) => {
                    charge(self.left, member.extra)?;
                    let value = map.next_value_seed(self.with(member.rule))?;
                    kept.keep(member, value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(kept.into_node())
    }
}

/// An object being read by a rule: which of its members are kept, each once.
pub struct KeptObject<'a> {
    rule: Keep,
    members: Members<'a>,
    /// The schema fields already kept, by their place in the schema: a field seen for the first
    /// time is added without looking for it among the others.
    seen: u64,
}

/// A member to keep: its name, the rule for its value, and whether it is new for sure.
pub struct Member<'a> {
    name: Name<'a>,
    /// How its value is read.
    pub rule: Keep,
    new: bool,
    /// What keeping it counts against [`MAX_KEPT_VALUES`] besides its value.
    pub extra: usize,
}

impl<'a> KeptObject<'a> {
    /// An object read by `rule` (whose members it keeps when it is `Fields` or `Keys`).
    pub fn new(rule: Keep) -> Self {
        Self {
            rule,
            members: Members::default(),
            seen: 0,
        }
    }

    /// The member named `key`, when the rule keeps it; `None` when its value is skipped.
    #[inline(always)]
    pub fn member(&mut self, key: Name<'a>) -> Option<Member<'a>> {
        let kept = self.rule.member(&key)?;
        Some(self.member_as(kept, || key))
    }

    /// [`Self::member`] for a name that does not live as long as the object: copied only when
    /// the member is kept under it (a label's or an annotation's key).
    pub fn member_copied(&mut self, key: &str) -> Option<Member<'a>> {
        let kept = self.rule.member(key)?;
        Some(self.member_as(kept, || Name::Owned(key.to_owned())))
    }

    /// The member `kept`, named by `name()` when it is not a field of the schema.
    #[inline(always)]
    fn member_as(&mut self, kept: KeptMember, name: impl FnOnce() -> Name<'a>) -> Member<'a> {
        let Some((at, field)) = kept.field else {
            return Member {
                name: name(),
                rule: kept.rule,
                new: false,
                extra: kept.extra,
            };
        };
        let bit = 1u64.checked_shl(at as u32).unwrap_or(0);
        let new = bit != 0 && self.seen & bit == 0;
        self.seen |= bit;
        // A field of the schema is named by the schema's own string: no allocation.
        Member {
            name: Name::Borrowed(field),
            rule: kept.rule,
            new,
            extra: kept.extra,
        }
    }

    /// Keeps `member` with its value.
    #[inline(always)]
    pub fn keep(&mut self, member: Member<'a>, value: Node<'a>) {
        if self.members.is_empty()
            && let Keep::Fields(fields) = self.rule
        {
            // Room for every field kept, so the list is allocated once.
            self.members.reserve(fields.len());
        }
        if member.new {
            self.members.push_new(member.name, value);
        } else {
            self.members.insert(member.name, value);
        }
    }

    /// The object read.
    pub fn into_node(self) -> Node<'a> {
        self.members.into_node()
    }
}

/// An object key, borrowed from the input when it holds no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads `text` (one JSON value) keeping what `rule` keeps. Text, not bytes: serde_json checks
/// UTF-8 only in the strings it reads, and skipped ones must be valid JSON too.
pub fn from_str(text: &str, rule: Keep) -> serde_json::Result<Node<'_>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = read(&mut deserializer, rule)?;
    deserializer.end()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{KEPT, Keep, MAX_KEPT_VALUES, TOO_MANY_VALUES, from_str};

    fn pruned(value: serde_json::Value) -> serde_json::Value {
        from_str(&value.to_string(), KEPT).unwrap().to_value()
    }

    #[test]
    fn fields_kvinject_never_reads_are_dropped_and_items_stay() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web", "managedFields": [{"manager": "kubectl"}],
                "labels": {"app": "web", "kvinject.io/inject": "true", "aadpodidbinding": "b"},
                "annotations": {"kvinject.io/env.A": "a", "note": "x", "kubernetes.io/config.mirror": "m"},
            },
            "spec": {
                "containers": [
                    {"name": "a", "image": "big", "env": [{"name": "X", "value": "secret-ish"}]},
                    {"name": "b", "ports": [{"containerPort": 80}]},
                ],
                "tolerations": [{"key": "k"}],
                "volumes": [{"name": "v", "emptyDir": {}}],
            },
            "status": {"phase": "Pending"},
        });
        assert_eq!(
            pruned(pod),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "web",
                    "labels": {"kvinject.io/inject": "true", "aadpodidbinding": "b"},
                    "annotations": {"kvinject.io/env.A": "a", "kubernetes.io/config.mirror": "m"},
                },
                "spec": {
                    "containers": [{"name": "a", "env": [{"name": "X", "value": ""}]}, {"name": "b"}],
                    "volumes": [{"name": "v"}],
                },
            })
        );
    }

    #[test]
    fn a_value_of_another_type_keeps_its_type_only() {
        let pod = json!({
            "metadata": {"name": {"deep": [1, 2, 3]}, "annotations": {"kvinject.io/vault": 7}},
            "spec": ["not", "an", "object"],
        });
        assert_eq!(
            pruned(pod),
            json!({"metadata": {"name": {}, "annotations": {"kvinject.io/vault": 7}}, "spec": []})
        );
        assert_eq!(
            from_str(r#""text""#, Keep::Shape).unwrap().to_value(),
            json!("")
        );
    }

    #[test]
    fn templates_of_workloads_and_cron_jobs_are_read() {
        let template = json!({
            "metadata": {"annotations": {"kvinject.io/env.A": "a"}, "labels": {"tier": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        });
        let kept = json!({
            "metadata": {"annotations": {"kvinject.io/env.A": "a"}, "labels": {}},
            "spec": {"containers": [{"name": "c"}]},
        });
        let deployment =
            json!({"kind": "Deployment", "spec": {"replicas": 3, "template": template}});
        assert_eq!(
            pruned(deployment),
            json!({"kind": "Deployment", "spec": {"template": kept}})
        );
        let cron = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}});
        assert_eq!(
            pruned(cron),
            json!({"spec": {"jobTemplate": {"spec": {"template": kept}}}})
        );
    }

    #[test]
    fn a_repeated_member_is_kept_once_with_its_last_value() {
        // As serde_json reads such an object; and a forged body repeating one name holds one
        // member, not one per repetition.
        let names = "\"name\": \"x\", ".repeat(10_000);
        let annotations: String = (0..20)
            .map(|i| format!("\"kvinject.io/env.V{i}\": \"a\", "))
            .collect::<String>()
            .repeat(500);
        let text = format!(
            r#"{{"metadata": {{{names} "name": "web", "annotations": {{{annotations} "kvinject.io/env.V3": "last"}}}}}}"#
        );
        let kept = from_str(&text, KEPT).unwrap();
        let metadata = kept["metadata"].as_object().unwrap();
        assert_eq!(metadata.len(), 2);
        assert_eq!(kept["metadata"]["name"], "web");
        let annotations = kept["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(annotations.len(), 20);
        assert_eq!(annotations[3].0, "kvinject.io/env.V3");
        assert_eq!(annotations[3].1, "last");
        let whole: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(kept.to_value(), pruned(whole));
    }

    #[test]
    fn escaped_keys_and_bad_json_are_handled() {
        let kept = from_str(r#"{"metadata": {"n\u0061me": "web"}}"#, KEPT)
            .unwrap()
            .to_value();
        assert_eq!(kept, json!({"metadata": {"name": "web"}}));
        assert!(from_str(r#"{"metadata": "#, KEPT).is_err());
        assert!(from_str(r#"{} trailing"#, KEPT).is_err());
        // Nesting is followed only as deep as the schema: deeper values are skipped without
        // recursion, so no depth overflows the stack.
        let deep = format!(
            r#"{{"spec": {{"x": {}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            from_str(&deep, KEPT).unwrap().to_value(),
            json!({"spec": {}})
        );
        assert!(from_str(&"[".repeat(10_000), KEPT).is_err());
    }

    /// A pod whose `spec.volumes` are `items` numbers, which counts 16 + 3 × `items`: the object
    /// (4 fields) 5, its apiVersion and kind 2, its spec (7 fields) 8, the volumes 1 and each item
    /// 3 (a volume's 2 fields). 33,328 items count exactly [`MAX_KEPT_VALUES`].
    fn volumes_of_numbers(items: usize) -> String {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "spec": {{"volumes": [{}0]}}}}"#,
            "0,".repeat(items - 1)
        )
    }

    #[test]
    fn a_read_keeps_at_most_max_kept_values() {
        // Items of a kept array are kept whatever they hold: counted, up to the limit.
        let items = (MAX_KEPT_VALUES - 16) / 3;
        assert_eq!(16 + 3 * items, MAX_KEPT_VALUES);
        let kept = from_str(&volumes_of_numbers(items), KEPT)
            .unwrap()
            .to_value();
        assert_eq!(kept["spec"]["volumes"].as_array().unwrap().len(), items);
        let error = from_str(&volumes_of_numbers(items + 1), KEPT).unwrap_err();
        assert!(error.to_string().starts_with(TOO_MANY_VALUES), "{error}");
        // What is skipped is not counted.
        let unread = format!(
            r#"{{"spec": {{"x": [{}0]}}}}"#,
            "0,".repeat(2 * MAX_KEPT_VALUES)
        );
        assert_eq!(
            from_str(&unread, KEPT).unwrap().to_value(),
            json!({"spec": {}})
        );
    }
}
