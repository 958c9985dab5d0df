//! A watch cache of small typed entries by namespace and name: what kvinject reads of each
//! object, made from it as its event arrives, so the object itself (its `managedFields`,
//! `last-applied-configuration` and every other label and annotation) is never stored.
//!
//! It follows a watcher's events as kube's reflector store does (an initial list is gathered
//! apart and swapped in whole when it ends, so a re-list never shows half a cluster), but holds
//! a few dozen bytes an object instead of the object. Must not do I/O: the watch feeding it
//! lives in [`caches`](crate::cluster::caches).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

/// Entries by namespace (empty for cluster-scoped objects), then name.
type Entries<V> = HashMap<Box<str>, HashMap<Box<str>, V>>;

/// Entries made from the objects of one watch.
#[derive(Debug)]
pub struct KeyedCache<V> {
    entries: RwLock<Entries<V>>,
    synced: watch::Sender<bool>,
}

impl<V: Clone> KeyedCache<V> {
    /// An empty cache, not synced.
    pub fn new() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            synced: watch::Sender::new(false),
        }
    }

    /// The entry of `name` in `namespace` (`""` for cluster-scoped objects).
    pub fn get(&self, namespace: &str, name: &str) -> Option<V> {
        self.read().get(namespace)?.get(name).cloned()
    }

    /// What `look` reads of the entry of `name` in `namespace` (without copying the entry).
    pub fn look<R>(&self, namespace: &str, name: &str, look: impl FnOnce(&V) -> R) -> Option<R> {
        self.read().get(namespace)?.get(name).map(look)
    }

    /// Whether the entry of `name` in `namespace`, as `fact` reads it, is `answer` (`None` when
    /// none is held), compared where it is held.
    pub fn entry_is<F: PartialEq + ?Sized>(
        &self,
        namespace: &str,
        name: &str,
        answer: Option<&F>,
        fact: impl FnOnce(&V) -> &F,
    ) -> bool {
        let held = self.look(namespace, name, |entry| answer == Some(fact(entry)));
        held.unwrap_or(answer.is_none())
    }

    /// Whether an entry of `name` in `namespace` is held (without copying it).
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.look(namespace, name, |_| ()).is_some()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.read().values().map(HashMap::len).sum()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in `namespace` that pass `counted`.
    pub fn count_in(&self, namespace: &str, counted: impl Fn(&V) -> bool) -> usize {
        self.read().get(namespace).map_or(0, |names| {
            names.values().filter(|entry| counted(entry)).count()
        })
    }

    /// Calls `each` with (namespace, name, entry) for every entry.
    pub fn for_each(&self, mut each: impl FnMut(&str, &str, &V)) {
        for (namespace, names) in self.read().iter() {
            for (name, entry) in names {
                each(namespace, name, entry);
            }
        }
    }

    /// Calls `each` with (name, entry) for every entry in `namespace`.
    pub fn for_each_in(&self, namespace: &str, mut each: impl FnMut(&str, &V)) {
        if let Some(names) = self.read().get(namespace) {
            for (name, entry) in names {
                each(name, entry);
            }
        }
    }

    /// Whether the first initial list has been applied.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first initial list has been applied.
    pub async fn synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|synced| *synced).await;
    }

    fn read(&self) -> RwLockReadGuard<'_, Entries<V>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, change: impl FnOnce(&mut Entries<V>)) {
        change(&mut self.entries.write().unwrap_or_else(PoisonError::into_inner));
    }
}

impl<V: Clone> Default for KeyedCache<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Applies a watcher's events to a [`KeyedCache`], making each entry with `entry` (`None`: the
/// object is not kept, and a kept entry of the same name is removed).
pub struct CacheWriter<K, V> {
    entry: fn(&K) -> Option<V>,
    /// The initial list being gathered, swapped in when it ends.
    listing: Option<Entries<V>>,
}

impl<K: Resource, V: Clone> CacheWriter<K, V> {
    /// A writer making entries with `entry`.
    pub fn new(entry: fn(&K) -> Option<V>) -> Self {
        Self {
            entry,
            listing: None,
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, cache: &KeyedCache<V>, event: Event<K>) {
        match event {
            Event::Init => self.listing = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let (Some(listing), Some(entry)) = (self.listing.as_mut(), (self.entry)(&object))
                {
                    insert(listing, &object, entry);
                }
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                cache.write(|entries| *entries = listed);
                cache.synced.send_replace(true);
            }
            Event::Apply(object) => match (self.entry)(&object) {
                Some(entry) => cache.write(|entries| insert(entries, &object, entry)),
                None => cache.write(|entries| remove(entries, &object)),
            },
            Event::Delete(object) => cache.write(|entries| remove(entries, &object)),
        }
    }
}

fn insert<K: Resource, V>(entries: &mut Entries<V>, object: &K, entry: V) {
    let namespace = object.namespace().unwrap_or_default();
    let names = match entries.get_mut(namespace.as_str()) {
        Some(names) => names,
        None => entries.entry(namespace.into_boxed_str()).or_default(),
    };
    names.insert(object.name_any().into_boxed_str(), entry);
}

fn remove<K: Resource, V>(entries: &mut Entries<V>, object: &K) {
    let namespace = object.namespace().unwrap_or_default();
    if let Some(names) = entries.get_mut(namespace.as_str()) {
        names.remove(object.name_any().as_str());
        if names.is_empty() {
            entries.remove(namespace.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::ObjectMeta;

    use super::{CacheWriter, Event, KeyedCache};

    fn account(namespace: &str, name: &str, client_id: Option<&str>) -> ServiceAccount {
        let annotations = client_id.map(|id| [("client".to_owned(), id.to_owned())].into());
        ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                annotations,
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        }
    }

    fn client_id(account: &ServiceAccount) -> Option<String> {
        account
            .metadata
            .annotations
            .as_ref()?
            .get("client")
            .cloned()
    }

    #[test]
    fn follows_lists_and_changes_keeping_only_entries() {
        let cache = KeyedCache::new();
        let mut writer = CacheWriter::new(client_id);
        writer.apply(&cache, Event::Init);
        writer.apply(&cache, Event::InitApply(account("shop", "api", Some("a"))));
        writer.apply(&cache, Event::InitApply(account("shop", "web", None)));
        // Nothing shows before the list ends.
        assert!(!cache.is_synced());
        assert_eq!(cache.get("shop", "api"), None);
        writer.apply(&cache, Event::InitDone);
        assert!(cache.is_synced());
        assert_eq!(cache.get("shop", "api").as_deref(), Some("a"));
        assert_eq!(cache.get("shop", "web"), None, "no entry: not kept");
        assert_eq!(cache.len(), 1);

        writer.apply(&cache, Event::Apply(account("shop", "web", Some("w"))));
        writer.apply(&cache, Event::Apply(account("shop", "api", None)));
        assert_eq!(cache.get("shop", "web").as_deref(), Some("w"));
        assert_eq!(
            cache.get("shop", "api"),
            None,
            "an entry that went is removed"
        );
        writer.apply(&cache, Event::Delete(account("shop", "web", Some("w"))));
        assert!(cache.is_empty());

        // A re-list replaces everything at once: what was deleted meanwhile is gone.
        writer.apply(&cache, Event::Apply(account("other", "gone", Some("g"))));
        writer.apply(&cache, Event::Init);
        writer.apply(&cache, Event::InitApply(account("shop", "new", Some("n"))));
        assert_eq!(cache.get("other", "gone").as_deref(), Some("g"));
        writer.apply(&cache, Event::InitDone);
        assert_eq!(cache.get("other", "gone"), None);
        let mut seen = Vec::new();
        cache.for_each(|ns, name, id| seen.push(format!("{ns}/{name}={id}")));
        assert_eq!(seen, ["shop/new=n"]);
    }
}
