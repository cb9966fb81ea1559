//! Sharing identical environments between jobs. Jobs submitted from one shell carry the
//! same environment (often kilobytes); keeping one copy keeps 100k pending jobs small.
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

type Env = BTreeMap<String, String>;

/// Remembers environments in use; holds only weak references, so a forgotten environment
/// is freed with its last job.
#[derive(Clone, Debug, Default)]
pub struct EnvInterner {
    by_hash: HashMap<u64, Vec<Weak<Env>>>,
    inserts: usize,
}

impl EnvInterner {
    /// The shared copy of `env` (inserting it if new).
    pub fn intern(&mut self, env: Arc<Env>) -> Arc<Env> {
        if env.is_empty() {
            return env;
        }
        let mut h = DefaultHasher::new();
        env.hash(&mut h);
        let bucket = self.by_hash.entry(h.finish()).or_default();
        bucket.retain(|w| w.strong_count() > 0);
        if let Some(shared) = bucket.iter().filter_map(Weak::upgrade).find(|e| **e == *env) {
            return shared;
        }
        bucket.push(Arc::downgrade(&env));
        self.inserts += 1;
        if self.inserts.is_multiple_of(4096) {
            self.by_hash.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
        }
        env
    }
}

// The interner is a cache, not state: replicas may hold different caches and still be equal.
impl PartialEq for EnvInterner {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_environments_share_one_copy() {
        let mut i = EnvInterner::default();
        let e = |v: &str| Arc::new(BTreeMap::from([("PATH".to_string(), v.to_string())]));
        let a = i.intern(e("/bin"));
        let b = i.intern(e("/bin"));
        let c = i.intern(e("/usr/bin"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b));
        // Freed once no job uses it; a new one is stored again.
        let d = i.intern(e("/bin"));
        assert_eq!(Arc::strong_count(&d), 1);
    }
}
