//! Automatic prefix caching (vLLM's `enable_prefix_caching`, at the granularity of whole
//! sequences): the KV cache of a finished sequence is kept with the tokens it holds, and a later
//! prompt that starts with those tokens — an agent's next turn is its previous prompt, the
//! generated turn and the tool's observation — is prefilled from where they diverge instead of
//! from position 0.
//!
//! Requests that arrive together with one prompt (the samples of a GRPO group) share it too: the
//! engine holds back a request whose prompt is mostly that of a sequence still prefilling, then
//! copies the computed positions from it.
//!
//! A cache is only valid for the weights that computed it: every entry is dropped when the
//! weights may have changed (each [`crate::EngineHandle::pause`]).

use forge_model::KvCache;

pub(crate) struct PrefixCache {
    entries: Vec<Entry>,
    /// The weights version the entries were computed with.
    weights_version: u64,
    /// Bumped on every insert or hit; an entry's `last_used` orders evictions.
    clock: u64,
}

struct Entry {
    /// The tokens at the cache's positions `0..cache.len()`.
    tokens: Vec<u32>,
    cache: KvCache,
    last_used: u64,
}

/// A cache taken for a new prompt: its first `reused` positions hold the prompt's first tokens.
pub(crate) struct Hit {
    pub cache: KvCache,
    pub reused: usize,
}

impl Hit {
    /// A new cache of `capacity` positions with the first `reused` positions of `cache`; `None`
    /// (logged) when it cannot be allocated.
    pub fn copy(cache: &KvCache, reused: usize, capacity: usize) -> Option<Self> {
        match cache.prefix_copy(reused, capacity) {
            Ok(cache) => Some(Self { cache, reused }),
            Err(e) => {
                tracing::warn!("prefix cache: copying {reused} cached positions failed ({e}); prefilling the whole prompt");
                None
            }
        }
    }
}

/// How many leading tokens `a` and `b` share.
pub(crate) fn shared_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    pub fn new() -> Self {
        Self { entries: Vec::new(), weights_version: 0, clock: 0 }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops every entry if the weights changed since they were computed.
    pub fn sync_weights(&mut self, weights_version: u64) {
        if weights_version != self.weights_version {
            self.entries.clear();
            self.weights_version = weights_version;
        }
    }

    /// Keeps `cache`, which holds `tokens[..cache.len()]` computed with `weights_version`. An entry
    /// whose tokens are a prefix of these is dropped: any prompt it matches, this one matches at
    /// least as far.
    pub fn insert(&mut self, mut tokens: Vec<u32>, cache: KvCache, weights_version: u64) {
        if weights_version != self.weights_version || cache.is_empty() {
            return;
        }
        tokens.truncate(cache.len());
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.clock += 1;
        self.entries.push(Entry { tokens, cache, last_used: self.clock });
    }

    /// A cache of at least `capacity` positions holding the longest prefix `prompt` shares with an
    /// entry. At least the prompt's last token is always left to prefill: its logits give the first
    /// new token. A prompt that extends an entry's tokens (an agent's next turn) takes the entry;
    /// one that diverges inside them (another sample of the same task) gets a copy, and the entry
    /// stays for its own continuation. `None` when no entry shares a token, or `at_least` tokens
    /// (what another source already offers), or when copying fails.
    pub fn take(&mut self, prompt: &[u32], capacity: usize, at_least: usize) -> Option<Hit> {
        let (best, common) =
            self.entries.iter().enumerate().map(|(i, e)| (i, shared_prefix(&e.tokens, prompt))).max_by_key(|&(i, n)| (n, self.entries[i].last_used))?;
        let reused = common.min(prompt.len() - 1);
        if reused == 0 || common < at_least {
            return None;
        }
        self.clock += 1;
        if common < self.entries[best].tokens.len() {
            self.entries[best].last_used = self.clock;
            return Hit::copy(&self.entries[best].cache, reused, capacity);
        }
        if self.entries[best].cache.capacity() >= capacity {
            let mut cache = self.entries.swap_remove(best).cache;
            cache.truncate(reused);
            return Some(Hit { cache, reused });
        }
        let hit = Hit::copy(&self.entries[best].cache, reused, capacity);
        self.entries.swap_remove(best);
        hit
    }

    /// Evicts the least recently used entries until at most `keep` remain.
    pub fn evict_to(&mut self, keep: usize) {
        while self.entries.len() > keep {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_used).map(|(i, _)| i).expect("not empty");
            self.entries.swap_remove(oldest);
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use forge_model::{Qwen3ForCausalLM, SequenceStep};

    fn model() -> Qwen3ForCausalLM {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gqa4-tied-f32/model");
        forge_model::load_model(&dir, DType::F32, &Device::Cpu).unwrap()
    }

    /// A cache of `capacity` positions filled with `tokens` by the model.
    fn filled(model: &Qwen3ForCausalLM, tokens: &[u32], capacity: usize) -> KvCache {
        let mut cache = model.new_kv_cache(capacity).unwrap();
        model.forward_step(&mut [SequenceStep { cache: &mut cache, tokens }]).unwrap();
        cache
    }

    #[test]
    fn a_continuation_takes_its_entry_and_a_divergent_prompt_copies_the_shared_prefix() {
        let model = model();
        let mut pool = PrefixCache::new();
        pool.insert(vec![1, 2, 3, 4, 5, 6], filled(&model, &[1, 2, 3, 4, 5], 8), 0);
        pool.insert(vec![1, 2, 9], filled(&model, &[1, 2, 9], 8), 0);
        assert_eq!(pool.len(), 2);
        // diverges after 4 tokens of the first entry (its token beyond the cache is not counted):
        // a copy of exactly the asked capacity, the entry stays
        assert!(pool.take(&[1, 2, 3, 4, 7, 7], 6, 5).is_none(), "another source offers 5 shared tokens");
        assert_eq!(pool.len(), 2);
        let hit = pool.take(&[1, 2, 3, 4, 7, 7], 6, 4).expect("a hit: as good as the other source");
        assert_eq!((hit.reused, hit.cache.len(), hit.cache.capacity()), (4, 4, 6));
        assert_eq!(pool.len(), 2);
        // extends the first entry and fits its cache: the entry itself, in place
        let hit = pool.take(&[1, 2, 3, 4, 5, 8, 8], 8, 0).expect("a hit");
        assert_eq!((hit.reused, hit.cache.len(), hit.cache.capacity()), (5, 5, 8));
        assert_eq!(pool.len(), 1);
        // equal to the second entry's tokens: its last token is still prefilled; a larger cache is a copy
        let hit = pool.take(&[1, 2, 9], 16, 0).expect("a hit");
        assert_eq!((hit.reused, hit.cache.len(), hit.cache.capacity()), (2, 2, 16));
        assert_eq!(pool.len(), 0);
        assert!(pool.take(&[1, 2], 8, 0).is_none(), "the pool is empty");
        pool.insert(vec![5, 6], filled(&model, &[5, 6], 4), 0);
        assert!(pool.take(&[6, 5], 8, 0).is_none(), "nothing shared");
        assert_eq!(pool.len(), 1, "a miss keeps the entries");
    }

    #[test]
    fn entries_extended_by_a_new_one_are_dropped_and_the_least_recent_evicted() {
        let model = model();
        let mut pool = PrefixCache::new();
        pool.insert(vec![1, 2], filled(&model, &[1, 2], 8), 0);
        pool.insert(vec![3, 4], filled(&model, &[3, 4], 8), 0);
        pool.insert(vec![1, 2, 5], filled(&model, &[1, 2, 5], 8), 0);
        assert_eq!(pool.len(), 2, "[1, 2] is a prefix of [1, 2, 5]");
        pool.insert(vec![6], filled(&model, &[6], 8), 0);
        pool.evict_to(2);
        assert!(pool.take(&[3, 4, 0], 8, 0).is_none(), "[3, 4] was the least recently used");
        assert_eq!(pool.take(&[1, 2, 5, 0], 8, 0).map(|h| h.reused), Some(3));
    }

    #[test]
    fn new_weights_drop_every_entry_and_refuse_caches_of_the_old_ones() {
        let model = model();
        let mut pool = PrefixCache::new();
        pool.insert(vec![1, 2, 3], filled(&model, &[1, 2, 3], 8), 0);
        pool.sync_weights(0);
        assert_eq!(pool.len(), 1);
        pool.sync_weights(1);
        assert_eq!(pool.len(), 0);
        pool.insert(vec![1, 2, 3], filled(&model, &[1, 2, 3], 8), 0);
        assert_eq!(pool.len(), 0, "computed with the old weights");
        pool.insert(vec![1, 2, 3], filled(&model, &[1, 2, 3], 8), 1);
        assert_eq!(pool.take(&[1, 2, 3, 4], 8, 0).map(|h| h.reused), Some(3));
    }
}
