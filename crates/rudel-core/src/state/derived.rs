//! Indexes derived from the replicated state and kept up beside it (`tails.rs`,
//! `free_index.rs`, `releases.rs`): never serialized, equal on every replica by
//! construction, built on first use (so after a restart from a snapshot too). Changes are
//! noted as they happen and applied when the owner settles the index; until then the
//! index is not read, so a missed note costs time, never a wrong decision.

/// An index (`None` until first built) and what changed since it was last settled.
#[derive(Clone)]
pub struct Derived<I, K> {
    pub(crate) index: Option<I>,
    pub(crate) dirty: Vec<K>,
}

impl<I, K> Default for Derived<I, K> {
    fn default() -> Self {
        Derived {
            index: None,
            dirty: Vec::new(),
        }
    }
}

// Derived data: replicas compare equal whatever their caches hold.
impl<I, K> PartialEq for Derived<I, K> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<I, K> std::fmt::Debug for Derived<I, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Derived {{ built: {}, dirty: {} }}",
            self.index.is_some(),
            self.dirty.len()
        )
    }
}

impl<I, K> Derived<I, K> {
    /// Notes a change (nothing to note while the index is not built).
    pub(crate) fn touch(&mut self, k: K) {
        if self.index.is_some() {
            self.dirty.push(k);
        }
    }

    /// The index to settle and the changes to apply to it, taken out; `None` (the
    /// changes dropped) when it was never built: the caller builds it afresh.
    pub(crate) fn take(&mut self) -> Option<(I, Vec<K>)> {
        let dirty = std::mem::take(&mut self.dirty);
        self.index.take().map(|i| (i, dirty))
    }

    /// The index, if it is up to date.
    pub(crate) fn settled(&self) -> Option<&I> {
        self.index.as_ref().filter(|_| self.dirty.is_empty())
    }

    /// The index if it is up to date, else one `fresh` builds (a reader outside the
    /// settled points, such as a plan on a copy of the state).
    pub(crate) fn settled_or(&self, fresh: impl FnOnce() -> I) -> std::borrow::Cow<'_, I>
    where
        I: Clone,
    {
        match self.settled() {
            Some(index) => std::borrow::Cow::Borrowed(index),
            None => std::borrow::Cow::Owned(fresh()),
        }
    }
}
