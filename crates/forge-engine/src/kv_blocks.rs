//! Which blocks of the KV pool ([`forge_model::KvBlockPool`]) hold what: reference counts, and the
//! automatic prefix cache on blocks (vLLM's APC). A full block computed with the current weights is
//! keyed by its tokens and the hash of the blocks before it (a hash chain: a block's key names its
//! whole prefix), so a later prompt with the same prefix (another sample of a group, an agent's
//! next turn) references the same blocks instead of computing them again. Shared blocks are full
//! and never written again, so no sequence ever copies one.
//!
//! A block no sequence references stays cached while it holds a keyed prefix and is evicted least
//! recently freed first, only when a block is needed and no empty one is left. Every key is dropped
//! when the weights change ([`BlockManager::sync_weights`]): the blocks hold keys and values of the
//! old weights.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

/// A full block's content: its tokens, and the hash of the keys of all blocks before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BlockKey {
    prefix: u64,
    tokens: Vec<u32>,
}

impl BlockKey {
    /// The prefix hash of the block after this one.
    fn chain(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// The prefix hash of a sequence's first block.
pub(crate) const NO_PREFIX: u64 = 0;

#[derive(Default)]
struct Block {
    /// Sequences whose block tables list it.
    refs: u32,
    /// Set while the block is the cached copy of this content.
    key: Option<BlockKey>,
    /// When it was last freed (its place in `evictable`).
    freed_at: u64,
}

pub(crate) struct BlockManager {
    block_size: usize,
    blocks: Vec<Block>,
    /// Unreferenced blocks holding nothing reusable, lowest id first: a host pool's pages are
    /// committed as its blocks are first written, so low ids are reused before new ones are touched.
    empty: BTreeSet<u32>,
    /// Unreferenced blocks holding a cached prefix block, by `freed_at`: the oldest is evicted first.
    evictable: BTreeMap<u64, u32>,
    cached: HashMap<BlockKey, u32>,
    clock: u64,
    weights_version: u64,
}

/// The blocks of the pool, as [`crate::EngineHandle::kv_cache_stats`] reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvCacheStats {
    /// Blocks in the pool (`engine.kv_cache_memory` / bytes per block).
    pub blocks_total: usize,
    pub block_size: usize,
    /// Blocks some running sequence references.
    pub blocks_in_use: usize,
    /// The most blocks in use at once since the engine started.
    pub peak_blocks_in_use: usize,
    /// Unreferenced blocks kept for the prefix cache (reused by a matching prompt, evicted when
    /// the pool needs them).
    pub blocks_cached: usize,
    /// Sequences preempted because the pool was exhausted: their blocks were freed and they were
    /// computed again later (recompute), with the same result.
    pub preemptions: u64,
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        Self {
            block_size,
            blocks: (0..num_blocks).map(|_| Block::default()).collect(),
            empty: (0..num_blocks as u32).collect(),
            evictable: BTreeMap::new(),
            cached: HashMap::new(),
            clock: 0,
            weights_version: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks that [`Self::allocate`] can hand out (empty, or evictable cached ones).
    pub fn free(&self) -> usize {
        self.empty.len() + self.evictable.len()
    }

    pub fn in_use(&self) -> usize {
        self.blocks.len() - self.free()
    }

    pub fn cached_unused(&self) -> usize {
        self.evictable.len()
    }

    /// Drops every cached block if the weights changed since they were computed.
    pub fn sync_weights(&mut self, weights_version: u64) {
        if weights_version == self.weights_version {
            return;
        }
        self.weights_version = weights_version;
        self.cached.clear();
        for block in &mut self.blocks {
            block.key = None;
        }
        self.empty.extend(std::mem::take(&mut self.evictable).into_values());
    }

    /// The cached blocks holding the longest run of whole blocks at the start of `tokens`, in order.
    pub fn lookup(&self, tokens: &[u32]) -> Vec<u32> {
        let mut prefix = NO_PREFIX;
        let mut hits = Vec::new();
        for chunk in tokens.chunks_exact(self.block_size) {
            let key = BlockKey { prefix, tokens: chunk.to_vec() };
            let Some(&block) = self.cached.get(&key) else { break };
            prefix = key.chain();
            hits.push(block);
        }
        hits
    }

    /// How many blocks [`Self::free`] loses when `hits` are referenced (those not referenced yet).
    pub fn unreferenced(&self, hits: &[u32]) -> usize {
        hits.iter().filter(|&&b| self.blocks[b as usize].refs == 0).count()
    }

    /// References blocks found by [`Self::lookup`] for a new sequence.
    pub fn reference(&mut self, hits: &[u32]) {
        for &b in hits {
            let block = &mut self.blocks[b as usize];
            if block.refs == 0 {
                self.evictable.remove(&block.freed_at);
            }
            block.refs += 1;
        }
    }

    /// A block for a sequence to write: an empty one, else the least recently freed cached one
    /// (whose content is forgotten); `None` when every block is referenced.
    pub fn allocate(&mut self) -> Option<u32> {
        let b = match self.empty.pop_first() {
            Some(b) => b,
            None => {
                let (_, b) = self.evictable.pop_first()?;
                let key = self.blocks[b as usize].key.take().expect("evictable blocks are keyed");
                self.cached.remove(&key);
                b
            }
        };
        self.blocks[b as usize].refs = 1;
        Some(b)
    }

    /// Drops a sequence's references to `blocks` (its block table). Unreferenced blocks become
    /// evictable if cached, the table's last blocks first (a longer prefix is less likely to be
    /// asked for again than the shorter one it extends), else empty.
    pub fn release(&mut self, blocks: &[u32]) {
        for &b in blocks.iter().rev() {
            let block = &mut self.blocks[b as usize];
            block.refs -= 1;
            if block.refs > 0 {
                continue;
            }
            if block.key.is_some() {
                self.clock += 1;
                block.freed_at = self.clock;
                self.evictable.insert(self.clock, b);
            } else {
                self.empty.insert(b);
            }
        }
    }

    /// Caches `block`, now full with `tokens` after the blocks whose chain hash is `prefix`
    /// (computed with the current weights); returns the chain hash for the next block. When
    /// another block already caches this content (two sequences computed it at once), that one
    /// stays the cached copy.
    pub fn register(&mut self, block: u32, prefix: u64, tokens: &[u32]) -> u64 {
        let key = BlockKey { prefix, tokens: tokens.to_vec() };
        let chain = key.chain();
        if !self.cached.contains_key(&key) {
            self.cached.insert(key.clone(), block);
            self.blocks[block as usize].key = Some(key);
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Caches the full blocks of `tokens` held in `blocks`, as the engine does once computed.
    fn register_all(manager: &mut BlockManager, blocks: &[u32], tokens: &[u32]) {
        let mut prefix = NO_PREFIX;
        for (&b, chunk) in blocks.iter().zip(tokens.chunks_exact(manager.block_size())) {
            prefix = manager.register(b, prefix, chunk);
        }
    }

    #[test]
    fn a_prefix_is_found_by_whole_blocks_and_shared_by_reference() {
        let mut m = BlockManager::new(6, 2);
        let first: Vec<u32> = (0..3).map(|_| m.allocate().unwrap()).collect();
        register_all(&mut m, &first, &[1, 2, 3, 4, 5]);
        // [1, 2] [3, 4] are full and cached; [5] is not
        assert_eq!(m.lookup(&[1, 2, 3, 4, 5, 6]), first[..2]);
        assert_eq!(m.lookup(&[1, 2, 3, 9]), first[..1], "diverges in the second block");
        assert!(m.lookup(&[3, 4]).is_empty(), "the same tokens after another prefix are another block");
        let hits = m.lookup(&[1, 2, 3, 4, 7]);
        assert_eq!(m.unreferenced(&hits), 0, "still referenced by the first sequence");
        m.reference(&hits);
        assert_eq!((m.in_use(), m.free()), (3, 3), "shared, not copied");
        m.release(&first);
        assert_eq!((m.in_use(), m.cached_unused()), (2, 0), "the second sequence still holds the shared blocks");
        m.release(&hits);
        assert_eq!((m.in_use(), m.cached_unused(), m.free()), (0, 2, 6));
        // unreferenced cached blocks come back for a matching prompt
        let again = m.lookup(&[1, 2, 3, 4]);
        assert_eq!(again, first[..2]);
        assert_eq!(m.unreferenced(&again), 2);
    }

    #[test]
    fn empty_blocks_go_first_then_the_least_recently_freed_cached_ones() {
        let mut m = BlockManager::new(4, 1);
        let a = [m.allocate().unwrap(), m.allocate().unwrap()];
        register_all(&mut m, &a, &[1, 2]);
        m.release(&a);
        let b = [m.allocate().unwrap()];
        register_all(&mut m, &b, &[7]);
        m.release(&b);
        assert_eq!(m.cached_unused(), 3);
        // one empty block left, then evictions: [1, 2]'s last block was freed first (released in
        // reverse), then its first, then [7]
        assert_eq!(m.allocate(), Some(3));
        assert_eq!(m.allocate(), Some(a[1]));
        assert_eq!(m.lookup(&[1, 2]), [a[0]], "only the evicted block is forgotten");
        assert_eq!(m.allocate(), Some(a[0]));
        assert_eq!(m.allocate(), Some(b[0]));
        assert_eq!(m.allocate(), None, "every block referenced");
        assert!(m.lookup(&[7]).is_empty());
    }

    #[test]
    fn new_weights_forget_every_cached_block() {
        let mut m = BlockManager::new(3, 2);
        let blocks = [m.allocate().unwrap(), m.allocate().unwrap()];
        register_all(&mut m, &blocks, &[1, 2, 3, 4]);
        m.release(&blocks[1..]);
        m.sync_weights(0);
        assert_eq!(m.lookup(&[1, 2, 3, 4]).len(), 2);
        m.sync_weights(1);
        assert!(m.lookup(&[1, 2]).is_empty());
        assert_eq!((m.cached_unused(), m.in_use(), m.free()), (0, 1, 2));
        m.release(&blocks[..1]);
        assert_eq!(m.free(), 3, "a block keyed with the old weights comes back empty");
    }
}
