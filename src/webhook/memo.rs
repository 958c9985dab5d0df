//! Plans remembered: the answer to a pod kvinject has planned before, given again while every
//! fact it was planned on still holds.
//!
//! A workload's pods reach `/mutate` as one pod template many times over (a scale-up, a rollout,
//! a drained node): the same kept fields, the same namespace, the same answer. Planning
//! ([`admission::plan_answer`]) is a function of the pod's kept fields, its namespace, the
//! settings and the answers of the facts, nothing else. So a remembered answer is given only for
//! an equal pod (every kept field compared, not only a hash) in the same namespace, and only once
//! every question its planning asked is asked again and answered the same ([`Asked::holds`]):
//! planning again would ask the same questions, get the same answers and give the same answer.
//! Whatever follows planning (the namespace opt-in, verification, the SPC write) runs for every
//! request as before.
//!
//! Bounded in entries and in bytes; the entry used least recently goes first, and one whose
//! facts changed goes when its pod is planned again. A pod whose kept fields or answer are larger
//! than [`MAX_ENTRY_BYTES`] is planned every time. A pod and its namespace are written out as one
//! run of bytes ([`write_key`]) that no other pair writes the same: entries are picked by its
//! seeded hash under the lock and compared in full, byte for byte, outside it.
//!
//! The pods of one scale-up are created within a second or two, and their objects then reach
//! the webhook byte for byte the same: nothing the API server sets per pod (a name from
//! `generateName`, the uid, the creation time) is set before admission, and `managedFields` gives
//! its time in seconds. So the memo also keeps the text of the pod objects it read, with the key
//! their read wrote ([`ObjectTexts`]): an object sent again byte for byte is not read again,
//! its key is taken as it was written. Only a text read whole and found to be JSON is kept, and
//! one is taken only for an equal run of bytes in a body, compared in full.
//!
//! [`admission::plan_answer`]: crate::webhook::admission::plan_answer

use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use serde_json::Number;

use crate::core::facts::{Asked, ClusterFacts, RecordingFacts};
use crate::core::held::Held;
use crate::core::json::next_escaped;
use crate::core::node::Node;
use crate::core::reader::{KeptKey, write_length};
use crate::webhook::admission::{Answer, Decoded, ObjectNames, Recallable};

/// Entries kept by default (`--plan-cache-entries`).
pub const DEFAULT_ENTRIES: usize = 64;
/// Entries one memo may keep, at most: each look-up and eviction scans them.
pub const MAX_ENTRIES: usize = 4096;
/// Bytes all entries may hold together.
pub const MAX_BYTES: usize = 2 * 1024 * 1024;
/// Bytes one entry may hold.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// How a pod's answer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recall {
    /// Remembered, and every fact it was planned on still holds.
    Hit,
    /// Not remembered: planned.
    Miss,
    /// Remembered, but a fact it was planned on has changed: planned again.
    Stale,
}

impl Recall {
    /// Every result, in label order.
    pub const ALL: [Self; 3] = [Self::Hit, Self::Miss, Self::Stale];

    /// Stable lower-case name, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }
}

/// The remembered answers of one server.
pub struct PlanMemo {
    hasher: foldhash::fast::RandomState,
    entries: Shelf<Entry>,
    objects: ObjectTexts,
    reviews: ReviewTexts,
}

/// What an entry holds besides its key and what it remembers: what shelving it costs, and the
/// counts of its names' `Arc`.
const ENTRY_OVERHEAD: usize = shelved::<Entry>() + 2 * size_of::<usize>();

struct Entry {
    /// The namespace and the pod's kept fields, as [`write_key`] writes them.
    key: Box<[u8]>,
    asked: Vec<Asked>,
    answer: Answer,
    /// What logs name the pod by: its kept fields' too.
    names: Arc<ObjectNames>,
    bytes: usize,
}

impl Weighed for Entry {
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A pod's kept fields, as the memo compares them.
#[derive(Clone, Copy)]
pub enum Kept<'p, 'a> {
    /// Read into a tree.
    Tree(&'p Node<'a>),
    /// Written as a key while they were read, unbuilt ([`KeptKey`]).
    Key(&'p KeptKey),
}

/// An answer, how it was found, and the names of the pod it was planned for when it was
/// remembered (the same as the asking pod's, whose kept fields are the same).
pub struct Recalled {
    /// The answer, with an empty uid.
    pub answer: Answer,
    /// How it was found.
    pub recall: Recall,
    /// The remembered pod's names, when remembered.
    pub names: Option<Arc<ObjectNames>>,
}

impl PlanMemo {
    /// A memo of at most `capacity` answers (no more than [`MAX_ENTRIES`]) and [`MAX_BYTES`];
    /// `None` for 0 (every pod planned).
    pub fn new(capacity: usize) -> Option<Self> {
        let capacity = capacity.min(MAX_ENTRIES);
        (capacity > 0).then(|| Self {
            hasher: foldhash::fast::RandomState::default(),
            entries: Shelf::new(capacity),
            objects: ObjectTexts::new(capacity),
            reviews: ReviewTexts::new(capacity),
        })
    }

    /// The texts of the pod objects read for this memo, and their keys.
    pub fn objects(&self) -> &ObjectTexts {
        &self.objects
    }

    /// The reviews of pods decoded for this memo, but for their uids.
    pub fn reviews(&self) -> &ReviewTexts {
        &self.reviews
    }

    /// The answer to `pod` created in `namespace`: remembered while the facts hold, else
    /// `plan`'s over `facts`, recorded (and remembered with the pod's `names`, unless it denied
    /// for a fact the facts lack, which a look-up may yet find).
    pub fn answer(
        &self,
        pod: Kept,
        namespace: &str,
        facts: &dyn ClusterFacts,
        plan: impl FnOnce(&RecordingFacts) -> Answer,
        names: impl FnOnce() -> Arc<ObjectNames>,
    ) -> Recalled {
        let planned = |answer, recall| Recalled {
            answer,
            recall,
            names: None,
        };
        let mut key = Vec::with_capacity(match pod {
            Kept::Tree(_) => KEY_CAPACITY,
            Kept::Key(_) => namespace.len() + 16,
        });
        let Some(tail) = write_key(&mut key, namespace, pod) else {
            // Never remembered, so never found: planned, without copying the rest of the pod.
            return planned(plan(&RecordingFacts::new(facts)), Recall::Miss);
        };
        let hash = self.hasher.hash_one((&key[..], tail));
        let found = self.find(hash, &key, tail);
        if let Some(entry) = &found
            && entry.asked.iter().all(|asked| asked.holds(facts))
        {
            self.entries.touch(entry);
            return Recalled {
                answer: entry.answer.clone(),
                recall: Recall::Hit,
                names: Some(entry.names.clone()),
            };
        }
        let recording = RecordingFacts::new(facts);
        let answer = plan(&recording);
        let kept = recording.into_asked().filter(|_| !answer.missing_fact);
        let entry = kept.map(|asked| {
            let names = names();
            Entry {
                bytes: ENTRY_OVERHEAD
                    + key.len()
                    + tail.len()
                    + answer.weight()
                    + asked.heap()
                    + names.weight(),
                key: [&key[..], tail].concat().into_boxed_slice(),
                asked,
                answer: answer.clone(),
                names,
            }
        });
        // A stale entry goes whether or not the new answer takes its place.
        let entry = entry.filter(|e| e.bytes <= MAX_ENTRY_BYTES);
        self.store(found.as_ref(), entry.map(|entry| (hash, entry)));
        let recall = if found.is_some() {
            Recall::Stale
        } else {
            Recall::Miss
        };
        planned(answer, recall)
    }

    /// The answers remembered now, and the bytes they hold.
    pub fn size(&self) -> (usize, usize) {
        self.entries.size()
    }

    /// The entry for `key` followed by `tail`.
    fn find(&self, hash: u64, key: &[u8], tail: &[u8]) -> Option<Arc<Entry>> {
        let found = self.entries.find(hash, |entry| {
            let split = entry.key.split_at_checked(key.len());
            split
                .is_some_and(|(head, rest)| head == key && rest == tail)
                .then_some(())
        });
        found.map(|(entry, ())| entry)
    }

    /// Removes `stale` (if still there) and keeps `entry` (if any) under its hash.
    fn store(&self, stale: Option<&Arc<Entry>>, entry: Option<(u64, Entry)>) {
        let stale = |_: u64, slot: &Arc<Entry>| stale.is_some_and(|s| Arc::ptr_eq(slot, s));
        self.entries.store(stale, entry);
    }
}

/// The texts of pod objects read whole (each a JSON object of at least [`PICKED_BY`] bytes, at
/// most [`MAX_ENTRY_BYTES`]) and the keys their reads wrote, bounded as the answers are: as
/// many entries, and [`MAX_BYTES`] of their own. One text is kept for each run of its first
/// [`PICKED_BY`] bytes (a workload's pods mostly begin alike): the newest read.
pub struct ObjectTexts {
    hasher: foldhash::fast::RandomState,
    texts: Shelf<ObjectText>,
}

/// How many of an object's first bytes pick its entry; a shorter object is not kept.
pub const PICKED_BY: usize = 256;

/// An object's text and the key of its kept fields (written within [`MAX_ENTRY_BYTES`]).
struct ObjectText {
    text: Box<str>,
    key: Arc<KeptKey>,
    bytes: usize,
}

impl Weighed for ObjectText {
    fn bytes(&self) -> usize {
        self.bytes
    }
}

impl ObjectTexts {
    /// The limit of the keys kept (and of the keys to write for them).
    pub const KEY_LIMIT: usize = MAX_ENTRY_BYTES;

    fn new(capacity: usize) -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            texts: Shelf::new(capacity),
        }
    }

    /// The object text `rest` starts with, if kept: its length and its key. A JSON object ends
    /// where its braces close, so the value at the start of `rest` is that text and no more,
    /// whatever follows it.
    pub fn find(&self, rest: &str) -> Option<(usize, Arc<KeptKey>)> {
        let rest = rest.as_bytes();
        let hash = self.hasher.hash_one(rest.get(..PICKED_BY)?);
        let (found, ()) = self.texts.find(hash, |kept| {
            rest.starts_with(kept.text.as_bytes()).then_some(())
        })?;
        self.texts.touch(&found);
        Some((found.text.len(), found.key.clone()))
    }

    /// Keeps `text`, an object read whole, with the key its read wrote (unless the key passed
    /// its limit, or the text is shorter than [`PICKED_BY`] or longer than [`MAX_ENTRY_BYTES`]),
    /// in place of the text kept for the same first bytes.
    pub fn remember(&self, text: &str, key: &Arc<KeptKey>) {
        let (Some(head), Some(written)) = (text.as_bytes().get(..PICKED_BY), key.bytes()) else {
            return;
        };
        if text.len() > MAX_ENTRY_BYTES || written.len() > Self::KEY_LIMIT {
            return;
        }
        let hash = self.hasher.hash_one(head);
        let kept = ObjectText {
            text: text.into(),
            key: key.clone(),
            bytes: shelved::<ObjectText>() + text.len() + key.shared_bytes(),
        };
        self.texts.store(|slot, _| slot == hash, Some((hash, kept)));
    }

    /// The texts kept now, and the bytes they hold.
    pub fn size(&self) -> (usize, usize) {
        self.texts.size()
    }
}

/// The bodies of Pod CREATE reviews decoded whole (the object keyed within its limit, the uid
/// unescaped), but for the uid's text, and what each decoded to ([`Recallable`]): a body that is
/// the same bytes around another plain uid decodes as it did, with that uid, and is not read.
/// The pods of one scale-up come as such bodies (the same object, the same requester, options
/// and namespace). Bounded as [`ObjectTexts`] is; one body is kept for each length and run of
/// last [`PICKED_BY`] bytes (a workload's pods a second apart end alike): the newest decoded.
pub struct ReviewTexts {
    hasher: foldhash::fast::RandomState,
    texts: Shelf<ReviewText>,
}

/// A body cut around its uid's text, and what it decoded to.
struct ReviewText {
    /// The bytes before the uid's text (its opening quote last).
    head: Box<[u8]>,
    /// The bytes after it (its closing quote first).
    tail: Box<[u8]>,
    decoded: Recallable,
    bytes: usize,
}

impl Weighed for ReviewText {
    fn bytes(&self) -> usize {
        self.bytes
    }
}

impl ReviewText {
    /// The uid's text in `body`, when `body` is this one's bytes around a plain uid (a string
    /// without escapes or control characters, not empty): no other byte differs.
    fn uid_in<'b>(&self, body: &'b [u8]) -> Option<&'b str> {
        let end = body.len().checked_sub(self.tail.len())?;
        let uid = body.get(self.head.len()..end)?;
        let plain = !uid.is_empty() && next_escaped(uid).is_none();
        let same = body.starts_with(&self.head) && body.ends_with(&self.tail);
        (plain && same).then(|| std::str::from_utf8(uid).ok())?
    }
}

impl ReviewTexts {
    fn new(capacity: usize) -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            texts: Shelf::new(capacity),
        }
    }

    fn hash(&self, body: &[u8]) -> Option<u64> {
        let last = body.get(body.len().checked_sub(PICKED_BY)?..)?;
        Some(self.hasher.hash_one((body.len(), last)))
    }

    /// `body` decoded as the kept body it is but for its uid, if one is.
    pub fn find<'b>(&self, body: &'b [u8]) -> Option<Decoded<'b>> {
        let hash = self.hash(body)?;
        let (found, uid) = self.texts.find(hash, |kept| kept.uid_in(body))?;
        self.texts.touch(&found);
        Some(found.decoded.decoded(uid))
    }

    /// Keeps `body`, whose uid's text lies at `uid_at`, as `decoded` (in place of the body kept
    /// for the same length and last bytes), unless it is shorter than [`PICKED_BY`] or its parts
    /// longer than [`MAX_ENTRY_BYTES`].
    pub fn remember(&self, body: &[u8], uid_at: Range<usize>, decoded: Recallable) {
        let (Some(hash), Some(head), Some(tail)) = (
            self.hash(body),
            body.get(..uid_at.start),
            body.get(uid_at.end..),
        ) else {
            return;
        };
        if head.len() + tail.len() > MAX_ENTRY_BYTES {
            return;
        }
        let kept = ReviewText {
            bytes: shelved::<ReviewText>() + head.len() + tail.len() + decoded.heap(),
            head: head.into(),
            tail: tail.into(),
            decoded,
        };
        self.texts.store(|slot, _| slot == hash, Some((hash, kept)));
    }

    /// The bodies kept now, and the bytes they hold.
    pub fn size(&self) -> (usize, usize) {
        self.texts.size()
    }
}

/// What holding one entry on a [`Shelf`] costs besides the entry's own heap: its slot, the
/// entry, and the counts of the `Arc` it is shared through.
const fn shelved<E>() -> usize {
    size_of::<Slot<E>>() + size_of::<E>() + 2 * size_of::<usize>()
}

/// What a [`Shelf`] holds counts as its bytes.
trait Weighed {
    fn bytes(&self) -> usize;
}

/// Entries picked by a seeded hash, at most `capacity` of them and [`MAX_BYTES`] together; the
/// one used least recently goes first. A look-up picks an entry of its hash under the lock and
/// compares it after it, so that no request waits on another's comparison.
struct Shelf<E> {
    capacity: usize,
    entries: Mutex<Entries<E>>,
}

struct Entries<E> {
    list: Vec<Slot<E>>,
    bytes: usize,
    clock: u64,
}

struct Slot<E> {
    /// The clock when last found or stored.
    used: u64,
    /// The entry's hash, held here so that a look-up scans the list alone.
    hash: u64,
    entry: Arc<E>,
}

impl<E: Weighed> Shelf<E> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Entries {
                list: Vec::new(),
                bytes: 0,
                clock: 0,
            }),
        }
    }

    /// The entries held, and their bytes.
    fn size(&self) -> (usize, usize) {
        self.entries
            .lock()
            .map_or((0, 0), |entries| (entries.list.len(), entries.bytes))
    }

    /// The first entry of `hash` that `matches` (giving what the comparison found), compared
    /// outside the lock; on a collision, the next one of its hash after it. (An entry that moves
    /// meanwhile may be passed over: a miss, never a wrong entry.)
    fn find<T>(&self, hash: u64, matches: impl Fn(&E) -> Option<T>) -> Option<(Arc<E>, T)> {
        let mut from = 0;
        loop {
            let (at, entry) = {
                let entries = self.entries.lock().ok()?;
                let list = entries.list.get(from..)?;
                let at = list.iter().position(|slot| slot.hash == hash)?;
                (from + at, list[at].entry.clone())
            };
            if let Some(found) = matches(&entry) {
                return Some((entry, found));
            }
            from = at + 1;
        }
    }

    /// Marks `entry` as used now: the least recently used go first.
    fn touch(&self, entry: &Arc<E>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clock += 1;
            let clock = entries.clock;
            if let Some(slot) = (entries.list.iter_mut()).find(|s| Arc::ptr_eq(&s.entry, entry)) {
                slot.used = clock;
            }
        }
    }

    /// Removes the entries `stale` picks (by hash and entry) and keeps `entry` (if any) under
    /// its hash, making room for it.
    fn store(&self, stale: impl Fn(u64, &Arc<E>) -> bool, entry: Option<(u64, E)>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let entries = &mut *entries;
        let mut removed = 0;
        entries.list.retain(|slot| {
            let keep = !stale(slot.hash, &slot.entry);
            if !keep {
                removed += slot.entry.bytes();
            }
            keep
        });
        entries.bytes -= removed;
        let Some((hash, entry)) = entry else {
            return;
        };
        let bytes = entry.bytes();
        while entries.list.len() >= self.capacity || entries.bytes + bytes > MAX_BYTES {
            let Some(oldest) = (entries.list.iter().enumerate())
                .min_by_key(|(_, slot)| slot.used)
                .map(|(at, _)| at)
            else {
                break;
            };
            entries.bytes -= entries.list.swap_remove(oldest).entry.bytes();
        }
        entries.clock += 1;
        entries.bytes += bytes;
        entries.list.push(Slot {
            used: entries.clock,
            hash,
            entry: Arc::new(entry),
        });
    }
}

/// Room for the key of a typical pod (about 2.5 KB), so that it is seldom grown.
const KEY_CAPACITY: usize = 4096;

/// Writes `namespace` and `pod` as one run of bytes that no other pair writes the same: a tree,
/// each value a tag for its kind, then its length or count where it has one, so that the bytes
/// read back into one tree only; a key written by the read ([`KeptKey`], equal only for pods
/// read into equal trees) after a tag no tree starts with. Numbers in a tree are written by
/// representation (`0`, `0.0` and `-0.0` differ, as they do in the text). `None` once the key
/// would pass [`MAX_ENTRY_BYTES`]: an entry that large is never kept, and no string is copied
/// into the key after that point. A key the read wrote is not copied: `out` gets the namespace and
/// the tag, and the key is given back, to follow them.
fn write_key<'k>(out: &mut Vec<u8>, namespace: &str, pod: Kept<'k, '_>) -> Option<&'k [u8]> {
    let mut key = Key { out, over: false };
    key.text(namespace);
    let tail = match pod {
        Kept::Tree(tree) => {
            key.node(tree);
            &[]
        }
        Kept::Key(written) => {
            key.out.push(WRITTEN);
            written.bytes().unwrap_or_else(|| {
                key.over = true;
                &[]
            })
        }
    };
    let within = !key.over && out.len() + tail.len() <= MAX_ENTRY_BYTES;
    within.then_some(tail)
}

/// The tag before a key the read wrote (a tree's first tag is one of 0 to 5).
const WRITTEN: u8 = 0xff;

/// A key being written, and whether it has passed [`MAX_ENTRY_BYTES`].
struct Key<'a> {
    out: &'a mut Vec<u8>,
    over: bool,
}

impl Key<'_> {
    fn node(&mut self, node: &Node) {
        match node {
            Node::Null => self.out.push(0),
            Node::Bool(value) => self.out.extend_from_slice(&[1, u8::from(*value)]),
            Node::Number(number) => {
                let (unsigned, signed, bits) = number_parts(number);
                let (has_unsigned, has_signed) = (unsigned.is_some(), signed.is_some());
                self.out
                    .extend_from_slice(&[2, u8::from(has_unsigned), u8::from(has_signed)]);
                self.out
                    .extend_from_slice(&unsigned.unwrap_or_default().to_le_bytes());
                self.out
                    .extend_from_slice(&signed.unwrap_or_default().to_le_bytes());
                self.out.extend_from_slice(&bits.to_le_bytes());
            }
            Node::String(text) => {
                self.out.push(3);
                self.text(text);
            }
            Node::Array(items) => {
                self.out.push(4);
                write_length(self.out, items.len());
                for item in items {
                    self.node(item);
                }
            }
            Node::Object(members) => {
                self.out.push(5);
                write_length(self.out, members.len());
                for (name, value) in members {
                    self.text(name);
                    self.node(value);
                }
            }
        }
    }

    /// A string: its length, then its bytes, unless the key has passed [`MAX_ENTRY_BYTES`]
    /// (the tags and counts that follow stay bounded by the kept values, as the tree is).
    fn text(&mut self, text: &str) {
        self.over |= self.out.len() + text.len() > MAX_ENTRY_BYTES;
        if !self.over {
            write_length(self.out, text.len());
            self.out.extend_from_slice(text.as_bytes());
        }
    }
}

/// A number as its integer readings and its floating-point bits.
fn number_parts(number: &Number) -> (Option<u64>, Option<i64>, u64) {
    let bits = number.as_f64().map_or(0, f64::to_bits);
    (number.as_u64(), number.as_i64(), bits)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde_json::json;

    use super::*;
    use crate::core::facts::{DocumentFacts, NamespaceFacts};
    use crate::core::plan::Settings;
    use crate::webhook::admission::plan_answer;

    fn node(value: &serde_json::Value) -> Node<'static> {
        Node::from(value).into_owned()
    }

    /// Facts of one namespace whose default vault can change between answers.
    struct Vaults {
        vault: Mutex<Option<String>>,
        /// Whether the pod's ServiceAccount exists.
        account: Mutex<bool>,
    }

    impl Vaults {
        fn new(vault: &str) -> Self {
            Self {
                vault: Mutex::new(Some(vault.into())),
                account: Mutex::new(true),
            }
        }
    }

    impl ClusterFacts for Vaults {
        fn namespace(&self, _: &str) -> Option<NamespaceFacts> {
            Some(NamespaceFacts {
                injection_enabled: true,
                vault: self.vault.lock().unwrap().clone(),
                ..NamespaceFacts::default()
            })
        }
        fn service_account(
            &self,
            _: &str,
            _: &str,
        ) -> Option<crate::core::facts::ServiceAccountFacts> {
            let exists = *self.account.lock().unwrap();
            exists.then(|| crate::core::facts::ServiceAccountFacts {
                client_id: Some("11111111-2222-3333-4444-555555555555".into()),
            })
        }
        fn identity_bindings(
            &self,
            _: Option<&str>,
            _: &str,
        ) -> Vec<crate::core::facts::IdentityBindingFacts> {
            Vec::new()
        }
        fn secret_provider_class(&self, _: &str, _: &str) -> Option<crate::core::facts::SpcFacts> {
            None
        }
        fn secret_syncs(&self, _: &str, _: &str) -> Vec<crate::core::facts::SecretSync> {
            Vec::new()
        }
    }

    fn injected_pod() -> Node<'static> {
        node(&json!({
            "metadata": {"generateName": "web-", "labels": {"kvinject.io/inject": "true"},
                "annotations": {"kvinject.io/env.DB_PASSWORD": "db-password",
                    "kvinject.io/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "app"}]},
        }))
    }

    /// Answers through `memo`, counting the plans made.
    fn answer(
        memo: &PlanMemo,
        pod: &Node,
        namespace: &str,
        facts: &dyn ClusterFacts,
        plans: &Cell<usize>,
    ) -> (Answer, Recall) {
        let settings = Settings::new(None, None, "kvinject");
        let plan = |recording: &RecordingFacts| {
            plans.set(plans.get() + 1);
            plan_answer(pod, namespace, recording, &settings)
        };
        let names = || Arc::new(ObjectNames::of(Some(pod)));
        let recalled = memo.answer(Kept::Tree(pod), namespace, facts, plan, names);
        (recalled.answer, recalled.recall)
    }

    fn encoded(answer: &Answer) -> String {
        String::from_utf8(answer.clone().for_uid("u").encode()).unwrap()
    }

    #[test]
    fn an_equal_pod_is_answered_as_planned_while_the_facts_hold() {
        let memo = PlanMemo::new(4).unwrap();
        let facts = Vaults::new("kv-one");
        let plans = Cell::new(0);
        let pod = injected_pod();
        let (first, recall) = answer(&memo, &pod, "shop", &facts, &plans);
        assert_eq!(recall, Recall::Miss);
        assert!(
            encoded(&first).contains(r#""patch":"#),
            "{}",
            encoded(&first)
        );
        // A copy read anew (owned strings, not the same allocation) is the same pod.
        let copy = injected_pod();
        let (again, recall) = answer(&memo, &copy, "shop", &facts, &plans);
        assert_eq!((recall, plans.get()), (Recall::Hit, 1));
        assert_eq!(encoded(&again), encoded(&first));

        // The namespace's vault changes: the plan is made again, and says so.
        *facts.vault.lock().unwrap() = Some("kv-two".into());
        let (changed, recall) = answer(&memo, &pod, "shop", &facts, &plans);
        assert_eq!((recall, plans.get()), (Recall::Stale, 2));
        assert_ne!(encoded(&changed), encoded(&first));
        let fresh = plan_answer(&pod, "shop", &facts, &Settings::new(None, None, "kvinject"));
        assert_eq!(encoded(&changed), encoded(&fresh));
        assert_eq!(memo.size().0, 1, "the stale answer is replaced");
        let (_, recall) = answer(&memo, &pod, "shop", &facts, &plans);
        assert_eq!(recall, Recall::Hit);
    }

    #[test]
    fn another_namespace_or_any_other_kept_field_is_another_pod() {
        let memo = PlanMemo::new(16).unwrap();
        let facts = Vaults::new("kv");
        let plans = Cell::new(0);
        let pod = injected_pod();
        answer(&memo, &pod, "shop", &facts, &plans);
        assert_eq!(answer(&memo, &pod, "shop2", &facts, &plans).1, Recall::Miss);
        let mut value = pod.to_value();
        value["spec"]["containers"][0]["name"] = json!("other");
        assert_eq!(
            answer(&memo, &node(&value), "shop", &facts, &plans).1,
            Recall::Miss
        );
        // Numbers of another representation are another pod, though equal as numbers.
        let with = |mode: serde_json::Value| {
            let mut value = pod.to_value();
            value["spec"]["volumes"] =
                json!([{"name": "v", "secret": {"secretName": "s", "defaultMode": mode}}]);
            node(&value)
        };
        let read = |text: &str| with(serde_json::from_str(text).unwrap());
        let [zero, float, negative] = ["0", "0.0", "-0.0"].map(read);
        for pod in [&zero, &float, &negative] {
            assert_eq!(answer(&memo, pod, "shop", &facts, &plans).1, Recall::Miss);
        }
        assert_eq!(
            answer(&memo, &negative, "shop", &facts, &plans).1,
            Recall::Hit
        );
        assert_eq!(plans.get(), 6);
        // Told apart by the comparison itself, not only by their hashes.
        let key = |pod: &Node| {
            let mut key = Vec::new();
            write_key(&mut key, "shop", Kept::Tree(pod)).unwrap();
            key
        };
        assert!(key(&float) != key(&negative) && key(&zero) != key(&float));
        assert_eq!(key(&negative), key(&read("-0.0")));
    }

    #[test]
    fn a_pod_whose_key_the_read_wrote_is_remembered_with_its_names() {
        use crate::core::pruned::KEPT;
        use crate::core::reader::Reader;

        let memo = PlanMemo::new(4).unwrap();
        let facts = Vaults::new("kv-one");
        let settings = Settings::new(None, None, "kvinject");
        let plans = Cell::new(0);
        let by_key = |text: &str, limit: usize| {
            let mut key = KeptKey::new(limit);
            Reader::new(text).read_key(KEPT, &mut key).unwrap();
            let pod = Reader::new(text).read_kept(KEPT).unwrap();
            let plan = |recording: &RecordingFacts| {
                plans.set(plans.get() + 1);
                plan_answer(&pod, "shop", recording, &settings)
            };
            let names = || Arc::new(ObjectNames::of(Some(&pod)));
            memo.answer(Kept::Key(&key), "shop", &facts, plan, names)
        };
        let mut pod = injected_pod().to_value();
        pod["metadata"]["ownerReferences"] =
            json!([{"kind": "ReplicaSet", "name": "web-7d9f8", "controller": true}]);
        let text = pod.to_string();
        let first = by_key(&text, MAX_ENTRY_BYTES);
        assert_eq!((first.recall, first.names.is_none()), (Recall::Miss, true));
        let again = by_key(&text, MAX_ENTRY_BYTES);
        assert_eq!((again.recall, plans.get()), (Recall::Hit, 1));
        assert_eq!(encoded(&again.answer), encoded(&first.answer));
        let names = again.names.unwrap();
        assert_eq!(names.name, "web-");
        assert_eq!(names.owner, Some(("ReplicaSet".into(), "web-7d9f8".into())));
        // The same pod with fields kvinject skips changed, spaced otherwise: the same key.
        pod["spec"]["containers"][0]["image"] = json!("app:v2");
        let spaced = serde_json::to_string_pretty(&pod).unwrap();
        assert_eq!(by_key(&spaced, MAX_ENTRY_BYTES).recall, Recall::Hit);
        // A kept field changed: planned.
        pod["metadata"]["annotations"]["kvinject.io/env.DB_PASSWORD"] = json!("other");
        assert_eq!(
            by_key(&pod.to_string(), MAX_ENTRY_BYTES).recall,
            Recall::Miss
        );
        // A written key and a tree's start apart: no tree key starts with `WRITTEN`.
        let tree = Reader::new(&text).read_kept(KEPT).unwrap();
        let (mut by_tree, mut by_read) = (Vec::new(), Vec::new());
        write_key(&mut by_tree, "shop", Kept::Tree(&tree)).unwrap();
        let mut written = KeptKey::new(MAX_ENTRY_BYTES);
        Reader::new(&text).read_key(KEPT, &mut written).unwrap();
        write_key(&mut by_read, "shop", Kept::Key(&written)).unwrap();
        assert_eq!(by_read[5], WRITTEN);
        assert!(by_tree[5] <= 5, "{}", by_tree[5]);
        // A key past its limit is planned every time, and never kept.
        let before = memo.size();
        for _ in 0..2 {
            assert_eq!(by_key(&text, 10).recall, Recall::Miss);
        }
        assert_eq!(memo.size(), before);
    }

    #[test]
    fn a_written_key_is_found_only_with_its_own_namespace_and_every_byte_of_its_tail() {
        use crate::core::pruned::KEPT;
        use crate::core::reader::Reader;

        let memo = PlanMemo::new(4).unwrap();
        let facts = Vaults::new("kv-one");
        let settings = Settings::new(None, None, "kvinject");
        let text = injected_pod().to_value().to_string();
        let pod = Reader::new(&text).read_kept(KEPT).unwrap();
        let mut written = KeptKey::new(MAX_ENTRY_BYTES);
        Reader::new(&text).read_key(KEPT, &mut written).unwrap();
        let answer = |namespace: &str| {
            let plan =
                |recording: &RecordingFacts| plan_answer(&pod, namespace, recording, &settings);
            let names = || Arc::new(ObjectNames::of(Some(&pod)));
            memo.answer(Kept::Key(&written), namespace, &facts, plan, names)
                .recall
        };
        assert_eq!(answer("shop"), Recall::Miss);
        assert_eq!(answer("shop"), Recall::Hit);
        // The namespace's length is written: "sho" and a tail cannot pass for "shop" and it.
        assert_eq!(answer("sho"), Recall::Miss);
        assert_eq!(answer("shop"), Recall::Hit);
        // `find` compares the whole key, not only the hash: the stored entry's hash with a
        // tail one byte different, shorter or longer, or a namespace part cut short, is none.
        let mut head = Vec::new();
        let tail = write_key(&mut head, "shop", Kept::Key(&written)).unwrap();
        let hash = memo.hasher.hash_one((&head[..], tail));
        assert!(memo.find(hash, &head, tail).is_some());
        let mut changed = tail.to_vec();
        *changed.last_mut().unwrap() ^= 1;
        assert!(memo.find(hash, &head, &changed).is_none());
        assert!(memo.find(hash, &head, &tail[..tail.len() - 1]).is_none());
        assert!(memo.find(hash, &head, &[tail, b"x"].concat()).is_none());
        assert!(memo.find(hash, &head[..head.len() - 1], tail).is_none());
    }

    #[test]
    fn entries_of_one_hash_are_each_compared_in_full() {
        let memo = PlanMemo::new(4).unwrap();
        let facts = Vaults::new("kv-one");
        let settings = Settings::new(None, None, "kvinject");
        let pod = injected_pod();
        let planned = plan_answer(&pod, "shop", &RecordingFacts::new(&facts), &settings);
        let entry = |key: &[u8]| Entry {
            key: key.into(),
            asked: Vec::new(),
            answer: planned.clone(),
            names: Arc::default(),
            bytes: 1,
        };
        for key in [&b"first"[..], b"second", b"third"] {
            memo.store(None, Some((7, entry(key))));
        }
        // Each is found past the others of its hash, whichever it is compared with first.
        for key in [&b"first"[..], b"second", b"third"] {
            let found = memo.find(7, key, &[]).map(|entry| entry.key.clone());
            assert_eq!(found.as_deref(), Some(key));
        }
        let found = memo.find(7, b"sec", b"ond").map(|entry| entry.key.clone());
        assert_eq!(found.as_deref(), Some(&b"second"[..]), "a key and its tail");
        assert!(memo.find(7, b"fourth", &[]).is_none());
        assert!(memo.find(7, b"secondary", &[]).is_none(), "a longer key");
        assert!(memo.find(7, b"third", b"x").is_none(), "a longer tail");
        assert!(memo.find(8, b"first", &[]).is_none(), "another hash");
    }

    #[test]
    fn keys_differ_wherever_the_trees_or_namespaces_differ() {
        let key = |namespace: &str, text: &str| {
            let mut key = Vec::new();
            write_key(
                &mut key,
                namespace,
                Kept::Tree(&node(&serde_json::from_str(text).unwrap())),
            )
            .unwrap();
            key
        };
        // Pairs a key without lengths, counts or kinds would write the same.
        let pairs = [
            (("shop", r#"{"ab": ""}"#), ("shop", r#"{"a": "b"}"#)),
            (("shop", r#"["a", "b"]"#), ("shop", r#"["ab"]"#)),
            (("shop", r#"[["a"], "b"]"#), ("shop", r#"[["a", "b"]]"#)),
            (("shop", r#"{"a": []}"#), ("shop", r#"{"a": {}}"#)),
            (("shop", r#"{"a": null}"#), ("shop", r#"{"a": false}"#)),
            (("shop", r#""1""#), ("shop", "1")),
            (("shop", "1"), ("shop", "1.0")),
            (("shop", "-1"), ("shop", "18446744073709551615")),
            (("sho", r#""p""#), ("shop", r#""""#)),
            (
                ("shop", &format!(r#"["{}", ""]"#, "a".repeat(200))),
                ("shop", &format!(r#"["{}"]"#, "a".repeat(200))),
            ),
        ];
        for ((ns_a, a), (ns_b, b)) in pairs {
            assert_ne!(key(ns_a, a), key(ns_b, b), "{ns_a} {a} / {ns_b} {b}");
            assert_eq!(key(ns_a, a), key(ns_a, a));
        }
    }

    #[test]
    fn no_length_is_written_as_the_start_of_another() {
        let lengths = [0, 1, 127, 128, 255, 16_383, 16_384, 1 << 21, usize::MAX];
        let written = lengths.map(|length| {
            let mut out = Vec::new();
            write_length(&mut out, length);
            out
        });
        assert_eq!(written[2], [127]);
        assert_eq!(written[3], [0x80, 1]);
        for (a, first) in written.iter().enumerate() {
            for (b, second) in written.iter().enumerate() {
                assert!(a == b || !second.starts_with(first), "{a} {b}");
            }
        }
    }

    #[test]
    fn entries_and_bytes_stay_within_their_bounds_least_recently_used_first() {
        let memo = PlanMemo::new(3).unwrap();
        let facts = Vaults::new("kv");
        let plans = Cell::new(0);
        let named = |name: &str| {
            let mut value = injected_pod().to_value();
            value["metadata"]["generateName"] = json!(name);
            node(&value)
        };
        let [a, b, c, d] = ["a", "b", "c", "d"].map(named);
        for pod in [&a, &b, &c, &a, &d] {
            answer(&memo, pod, "shop", &facts, &plans);
        }
        assert_eq!(memo.size().0, 3);
        // `b` was used least recently: it went; `a`, found again since, stayed.
        assert_eq!(answer(&memo, &a, "shop", &facts, &plans).1, Recall::Hit);
        assert_eq!(answer(&memo, &b, "shop", &facts, &plans).1, Recall::Miss);

        // A pod whose kept fields alone are over the entry bound is planned every time.
        let mut value = injected_pod().to_value();
        value["metadata"]["annotations"]["note"] = json!("x".repeat(MAX_ENTRY_BYTES));
        let huge = node(&value);
        // Its key is not even written whole.
        let mut key = Vec::new();
        assert!(write_key(&mut key, "shop", Kept::Tree(&huge)).is_none());
        assert!(key.len() <= MAX_ENTRY_BYTES, "{}", key.len());
        let before = memo.size();
        answer(&memo, &huge, "shop", &facts, &plans);
        assert_eq!(answer(&memo, &huge, "shop", &facts, &plans).1, Recall::Miss);
        assert_eq!(memo.size(), before);

        // Many large pods together stay within the memo's bytes.
        let memo = PlanMemo::new(1000).unwrap();
        for i in 0..40 {
            let mut value = injected_pod().to_value();
            value["metadata"]["annotations"]["note"] = json!(format!("{i}{}", "x".repeat(100_000)));
            answer(&memo, &node(&value), "shop", &facts, &plans);
        }
        let (entries, bytes) = memo.size();
        assert!(
            bytes <= MAX_BYTES && entries < 40,
            "{entries} entries, {bytes} bytes"
        );
    }

    #[test]
    fn a_denial_for_a_missing_fact_is_not_remembered() {
        let memo = PlanMemo::new(4).unwrap();
        // No ServiceAccount known: the plan denies for a missing fact, which a look-up may find.
        let facts = DocumentFacts::default();
        let plans = Cell::new(0);
        let pod = injected_pod();
        let (first, _) = answer(&memo, &pod, "shop", &facts, &plans);
        assert!(first.missing_fact, "{first:?}");
        assert_eq!(answer(&memo, &pod, "shop", &facts, &plans).1, Recall::Miss);
        assert_eq!(memo.size(), (0, 0));
    }

    #[test]
    fn a_stale_answer_goes_even_when_the_new_one_is_not_remembered() {
        let memo = PlanMemo::new(4).unwrap();
        let facts = Vaults::new("kv");
        let plans = Cell::new(0);
        let pod = injected_pod();
        answer(&memo, &pod, "shop", &facts, &plans);
        assert_eq!(memo.size().0, 1);
        // The ServiceAccount is gone: the new plan denies for it, which is never remembered,
        // and the answer that rested on it goes too.
        *facts.account.lock().unwrap() = false;
        let (denied, recall) = answer(&memo, &pod, "shop", &facts, &plans);
        assert!(denied.missing_fact, "{denied:?}");
        assert_eq!((recall, memo.size()), (Recall::Stale, (0, 0)));
        assert_eq!(answer(&memo, &pod, "shop", &facts, &plans).1, Recall::Miss);
    }

    /// A pod's object text of at least [`PICKED_BY`] bytes, named `name`, and its key.
    fn object_text(name: &str) -> (String, Arc<KeptKey>) {
        use crate::core::pruned::KEPT;
        use crate::core::reader::Reader;

        let mut value = injected_pod().to_value();
        value["metadata"]["generateName"] = json!(name);
        value["metadata"]["managedFields"] =
            json!([{"manager": "m", "time": "2026-11-28T10:00:00Z"}]);
        let text = value.to_string();
        assert!(text.len() > PICKED_BY, "{}", text.len());
        let mut key = KeptKey::new(ObjectTexts::KEY_LIMIT);
        Reader::new(&text).read_key(KEPT, &mut key).unwrap();
        (text, Arc::new(key))
    }

    #[test]
    fn an_object_sent_again_byte_for_byte_is_taken_with_its_key() {
        let memo = PlanMemo::new(4).unwrap();
        let objects = memo.objects();
        let (text, key) = object_text("web-");
        assert!(objects.find(&text).is_none());
        objects.remember(&text, &key);
        // Whatever follows it in the body.
        for after in ["", "}", r#","oldObject":null,"dryRun":false}}"#, "garbage"] {
            let (length, found) = objects.find(&format!("{text}{after}")).unwrap();
            assert_eq!(length, text.len());
            assert!(Arc::ptr_eq(&found, &key), "the key kept, not a copy");
        }
        // Any byte of it other, or the body ending before it does: not found.
        for at in [0, PICKED_BY - 1, PICKED_BY, text.len() / 2, text.len() - 1] {
            let mut other = text.clone().into_bytes();
            other[at] = if other[at] == b' ' { b'\n' } else { b' ' };
            let other = String::from_utf8(other).unwrap();
            assert!(objects.find(&other).is_none(), "byte {at} changed");
        }
        assert!(objects.find(&text[..text.len() - 1]).is_none());
        assert!(objects.find(&text[..PICKED_BY]).is_none());
        assert!(objects.find(&text[..PICKED_BY - 1]).is_none());
        assert_eq!(objects.size().0, 1);
    }

    #[test]
    fn an_object_text_is_kept_only_short_of_its_bounds() {
        use crate::core::pruned::KEPT;
        use crate::core::reader::Reader;

        let memo = PlanMemo::new(8).unwrap();
        let objects = memo.objects();
        let keyed = |text: &str, limit: usize| {
            let mut key = KeptKey::new(limit);
            Reader::new(text).read_key(KEPT, &mut key).unwrap();
            Arc::new(key)
        };
        // Shorter than the bytes that pick it.
        let short = r#"{"metadata": {"generateName": "web-"}}"#;
        objects.remember(short, &keyed(short, ObjectTexts::KEY_LIMIT));
        // Its key past its limit (it stands for nothing).
        let (text, _) = object_text("web-");
        objects.remember(&text, &keyed(&text, 10));
        // Longer than an entry may be.
        let mut value = injected_pod().to_value();
        value["metadata"]["annotations"]["note"] = json!("x".repeat(MAX_ENTRY_BYTES));
        let huge = value.to_string();
        objects.remember(&huge, &keyed(&huge, ObjectTexts::KEY_LIMIT));
        assert_eq!(objects.size(), (0, 0));
        for body in [short, &text, &huge] {
            assert!(objects.find(body).is_none());
        }
    }

    #[test]
    fn one_object_text_is_kept_for_each_run_of_first_bytes_within_the_bounds() {
        let memo = PlanMemo::new(3).unwrap();
        let objects = memo.objects();
        // Two texts alike in their first bytes, apart after them: the newer is kept.
        let (first, first_key) = object_text("web-");
        let second = first.replacen(r#""image":"app""#, r#""image":"app:2""#, 1);
        assert_eq!(first[..PICKED_BY], second[..PICKED_BY]);
        assert_ne!(first, second);
        objects.remember(&first, &first_key);
        objects.remember(&second, &first_key);
        assert_eq!(objects.size().0, 1);
        assert!(objects.find(&first).is_none());
        assert!(objects.find(&second).is_some());
        // Texts of other first bytes each have their own, the least recently used going first.
        let [a, b, c] = ["a-", "b-", "c-"].map(object_text);
        for (text, key) in [&a, &b] {
            objects.remember(text, key);
        }
        assert!(objects.find(&second).is_some());
        objects.remember(&c.0, &c.1);
        assert_eq!(objects.size().0, 3);
        assert!(objects.find(&a.0).is_none(), "used least recently");
        assert!(objects.find(&second).is_some() && objects.find(&c.0).is_some());
        // The bytes stay within the bound, the texts' and the keys' counted.
        let (_, bytes) = objects.size();
        let least = second.len() + b.0.len() + c.0.len() + 3 * b.1.heap();
        assert!(bytes > least && bytes < least + 1024, "{bytes} for {least}");
        let memo = PlanMemo::new(1000).unwrap();
        for i in 0..40 {
            let mut value = injected_pod().to_value();
            value["metadata"]["generateName"] = json!(format!("{i}-"));
            value["spec"]["note"] = json!("x".repeat(100_000));
            let text = value.to_string();
            memo.objects().remember(&text, &object_text("k-").1);
        }
        let (entries, bytes) = memo.objects().size();
        assert!(
            bytes <= MAX_BYTES && entries < 40,
            "{entries} entries, {bytes} bytes"
        );
    }

    #[test]
    fn no_memo_without_entries() {
        assert!(PlanMemo::new(0).is_none());
    }
}
