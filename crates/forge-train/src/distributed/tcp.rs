//! The workers' TCP link: a star around rank 0, which listens at the master address. A reduction
//! gathers every worker's values at rank 0, sums them in rank order (rank 0's, then rank 1's, ...,
//! so the result does not depend on arrival order) and sends the sum back to all.
//!
//! Frames: `kind: u8, count: u64, payload` (little-endian). Both ends check the kind and count of
//! every frame: workers that call different collectives, or the same with different sizes, fail
//! with an error naming the rank instead of exchanging garbage.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Topology;
use crate::{Result, TrainError};

const HELLO: &[u8; 8] = b"FORGEDP1";

/// A value the link can sum.
pub(super) trait Element: Copy + std::ops::AddAssign {
    const KIND: u8;
    const SIZE: usize;
    fn write(self, out: &mut Vec<u8>);
    fn read(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $kind:expr) => {
        impl Element for $t {
            const KIND: u8 = $kind;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("one element's bytes"))
            }
        }
    };
}
const F32_SUM: u8 = 1;
const F64_SUM: u8 = 2;
const BROADCAST: u8 = 3;
const GATHER: u8 = 4;
const F32_REDUCE_SCATTER: u8 = 5;
element!(f32, F32_SUM);
element!(f64, F64_SUM);

fn kind_name(kind: u8) -> &'static str {
    match kind {
        F32_SUM => "f32 sum",
        F64_SUM => "f64 sum",
        BROADCAST => "broadcast",
        GATHER => "gather",
        F32_REDUCE_SCATTER => "f32 reduce-scatter",
        _ => "unknown message",
    }
}

enum Peers {
    /// Rank 0: the stream of rank `r` at index `r - 1`.
    Master(Vec<TcpStream>),
    Worker(TcpStream),
}

pub(super) struct Link {
    rank: usize,
    world_size: usize,
    peers: Mutex<Peers>,
}

fn lost(rank: usize, e: std::io::Error) -> TrainError {
    TrainError::Distributed(format!("lost the connection to rank {rank} ({e}): that worker has probably failed; see its log"))
}

fn write_frame(stream: &mut TcpStream, kind: u8, count: usize, payload: &[u8]) -> std::io::Result<()> {
    let mut header = [0u8; 9];
    header[0] = kind;
    header[1..].copy_from_slice(&(count as u64).to_le_bytes());
    stream.write_all(&header)?;
    stream.write_all(payload)?;
    stream.flush()
}

/// Reads a frame header and checks it is the `kind` and (when given) `count` expected of `peer`.
fn read_header(stream: &mut TcpStream, peer: usize, kind: u8, count: Option<usize>) -> Result<usize> {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).map_err(|e| lost(peer, e))?;
    let found = u64::from_le_bytes(header[1..].try_into().expect("8 bytes")) as usize;
    if header[0] != kind || count.is_some_and(|c| c != found) {
        return Err(TrainError::Distributed(format!(
            "the workers diverged: rank {peer} is in a {} of {found} values while this worker is in a {} of {} values; \
             every worker must run the same plan (same config and data)",
            kind_name(header[0]),
            kind_name(kind),
            count.map_or_else(|| "any number of".to_string(), |c| c.to_string()),
        )));
    }
    Ok(found)
}

impl Link {
    pub(super) fn connect(topology: &Topology, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let peers = match topology.rank {
            0 => Peers::Master(accept_workers(topology, deadline)?),
            _ => Peers::Worker(connect_to_master(topology, deadline)?),
        };
        Ok(Self { rank: topology.rank, world_size: topology.world_size, peers: Mutex::new(peers) })
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn rank(&self) -> usize {
        self.rank
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn world_size(&self) -> usize {
        self.world_size
    }

    /// Sums `values` over all workers, in place.
    pub(super) fn all_reduce<T: Element>(&self, values: &mut [T]) -> Result<()> {
        let mut peers = self.peers.lock().expect("link lock");
        let mut bytes = Vec::with_capacity(values.len() * T::SIZE);
        match &mut *peers {
            Peers::Master(streams) => {
                let mut incoming = vec![0u8; values.len() * T::SIZE];
                for (i, stream) in streams.iter_mut().enumerate() {
                    read_header(stream, i + 1, T::KIND, Some(values.len()))?;
                    stream.read_exact(&mut incoming).map_err(|e| lost(i + 1, e))?;
                    for (v, chunk) in values.iter_mut().zip(incoming.chunks_exact(T::SIZE)) {
                        *v += T::read(chunk);
                    }
                }
                values.iter().for_each(|v| v.write(&mut bytes));
                for (i, stream) in streams.iter_mut().enumerate() {
                    write_frame(stream, T::KIND, values.len(), &bytes).map_err(|e| lost(i + 1, e))?;
                }
            }
            Peers::Worker(stream) => {
                values.iter().for_each(|v| v.write(&mut bytes));
                write_frame(stream, T::KIND, values.len(), &bytes).map_err(|e| lost(0, e))?;
                read_header(stream, 0, T::KIND, Some(values.len()))?;
                stream.read_exact(&mut bytes).map_err(|e| lost(0, e))?;
                for (v, chunk) in values.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
                    *v = T::read(chunk);
                }
            }
        }
        Ok(())
    }

    /// The sum over all workers of `values` (every worker passes the same length, a multiple of
    /// the world size), cut into `world_size` equal chunks: this worker gets chunk `rank`. Rank 0
    /// sums in rank order, as [`all_reduce`](Self::all_reduce) does, so chunk r is bit-identical
    /// to the same elements of an all-reduce.
    pub(super) fn reduce_scatter(&self, values: &[f32]) -> Result<Vec<f32>> {
        let chunk = values.len() / self.world_size;
        assert_eq!(chunk * self.world_size, values.len(), "reduce_scatter: {} values do not split into {} chunks", values.len(), self.world_size);
        let mut peers = self.peers.lock().expect("link lock");
        match &mut *peers {
            Peers::Master(streams) => {
                let mut sum = values.to_vec();
                let mut incoming = vec![0u8; values.len() * 4];
                for (i, stream) in streams.iter_mut().enumerate() {
                    read_header(stream, i + 1, F32_REDUCE_SCATTER, Some(values.len()))?;
                    stream.read_exact(&mut incoming).map_err(|e| lost(i + 1, e))?;
                    for (v, bytes) in sum.iter_mut().zip(incoming.chunks_exact(4)) {
                        *v += f32::read(bytes);
                    }
                }
                for (i, stream) in streams.iter_mut().enumerate() {
                    let mut bytes = Vec::with_capacity(chunk * 4);
                    sum[(i + 1) * chunk..(i + 2) * chunk].iter().for_each(|v| v.write(&mut bytes));
                    write_frame(stream, F32_REDUCE_SCATTER, chunk, &bytes).map_err(|e| lost(i + 1, e))?;
                }
                sum.truncate(chunk);
                Ok(sum)
            }
            Peers::Worker(stream) => {
                let mut bytes = Vec::with_capacity(values.len() * 4);
                values.iter().for_each(|v| v.write(&mut bytes));
                write_frame(stream, F32_REDUCE_SCATTER, values.len(), &bytes).map_err(|e| lost(0, e))?;
                read_header(stream, 0, F32_REDUCE_SCATTER, Some(chunk))?;
                let mut incoming = vec![0u8; chunk * 4];
                stream.read_exact(&mut incoming).map_err(|e| lost(0, e))?;
                Ok(incoming.chunks_exact(4).map(f32::read).collect())
            }
        }
    }

    /// Every worker's `bytes` (the same length on each), concatenated in rank order, on every worker.
    pub(super) fn all_gather(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let gathered = self.gather(bytes)?;
        let all = match gathered {
            Some(parts) => {
                if let Some((rank, part)) = parts.iter().enumerate().find(|(_, p)| p.len() != bytes.len()) {
                    return Err(TrainError::Distributed(format!(
                        "the workers diverged: rank {rank} all-gathers {} bytes while rank 0 all-gathers {}; every worker must run the same plan",
                        part.len(),
                        bytes.len()
                    )));
                }
                self.broadcast(Some(&parts.concat()))?
            }
            None => self.broadcast(None)?,
        };
        if all.len() != bytes.len() * self.world_size {
            return Err(TrainError::Distributed(format!("all-gather: rank 0 sent {} bytes, expected {}", all.len(), bytes.len() * self.world_size)));
        }
        Ok(all)
    }

    /// Rank 0's `bytes`, on every worker (workers pass `None`).
    pub(super) fn broadcast(&self, bytes: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut peers = self.peers.lock().expect("link lock");
        match (&mut *peers, bytes) {
            (Peers::Master(streams), Some(bytes)) => {
                for (i, stream) in streams.iter_mut().enumerate() {
                    write_frame(stream, BROADCAST, bytes.len(), bytes).map_err(|e| lost(i + 1, e))?;
                }
                Ok(bytes.to_vec())
            }
            (Peers::Worker(stream), None) => {
                let count = read_header(stream, 0, BROADCAST, None)?;
                let mut bytes = vec![0u8; count];
                stream.read_exact(&mut bytes).map_err(|e| lost(0, e))?;
                Ok(bytes)
            }
            _ => Err(TrainError::Distributed(format!("rank {}: only rank 0 broadcasts", self.rank))),
        }
    }

    /// Every worker's `bytes` at rank 0, in rank order; `None` on the others.
    pub(super) fn gather(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let mut peers = self.peers.lock().expect("link lock");
        match &mut *peers {
            Peers::Master(streams) => {
                let mut all = vec![bytes.to_vec()];
                for (i, stream) in streams.iter_mut().enumerate() {
                    let count = read_header(stream, i + 1, GATHER, None)?;
                    let mut incoming = vec![0u8; count];
                    stream.read_exact(&mut incoming).map_err(|e| lost(i + 1, e))?;
                    all.push(incoming);
                }
                Ok(Some(all))
            }
            Peers::Worker(stream) => {
                write_frame(stream, GATHER, bytes.len(), bytes).map_err(|e| lost(0, e))?;
                Ok(None)
            }
        }
    }
}

fn hello(rank: usize, world_size: usize) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(HELLO);
    out[8..16].copy_from_slice(&(rank as u64).to_le_bytes());
    out[16..].copy_from_slice(&(world_size as u64).to_le_bytes());
    out
}

fn parse_hello(bytes: &[u8; 24]) -> Option<(usize, usize)> {
    (&bytes[..8] == HELLO).then(|| {
        let rank = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
        let world = u64::from_le_bytes(bytes[16..].try_into().expect("8 bytes")) as usize;
        (rank, world)
    })
}

fn accept_workers(topology: &Topology, deadline: Instant) -> Result<Vec<TcpStream>> {
    let master = &topology.master;
    let listener = TcpListener::bind(master).map_err(|e| {
        TrainError::Distributed(format!("rank 0 could not listen on {master} ({e}); is MASTER_PORT used by another run, or MASTER_ADDR not this machine?"))
    })?;
    listener.set_nonblocking(true).map_err(|e| TrainError::Distributed(format!("listening on {master}: {e}")))?;
    let mut streams: Vec<Option<TcpStream>> = (1..topology.world_size).map(|_| None).collect();
    while streams.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((mut stream, from)) => {
                let mut handshake = || -> std::io::Result<Option<(usize, usize)>> {
                    stream.set_nonblocking(false)?;
                    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let mut buf = [0u8; 24];
                    stream.read_exact(&mut buf)?;
                    Ok(parse_hello(&buf))
                };
                let Ok(Some((rank, world))) = handshake() else {
                    tracing::warn!(%from, "ignored a connection to the master port that is not a forge worker");
                    continue;
                };
                if world != topology.world_size || rank == 0 || rank >= topology.world_size || streams[rank - 1].is_some() {
                    return Err(TrainError::Distributed(format!(
                        "a worker from {from} joined as rank {rank} of {world}, but this run has WORLD_SIZE={} and {}; \
                         every worker needs the same WORLD_SIZE and its own RANK",
                        topology.world_size,
                        if rank > 0 && rank < topology.world_size && streams[rank - 1].is_some() { "that rank has joined already" } else { "ranks 1.. to fill" },
                    )));
                }
                stream
                    .write_all(&hello(0, world))
                    .and_then(|()| stream.set_read_timeout(None))
                    .and_then(|()| stream.set_nodelay(true))
                    .map_err(|e| lost(rank, e))?;
                streams[rank - 1] = Some(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = streams.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| (i + 1).to_string()).collect();
                    return Err(TrainError::Distributed(format!(
                        "timed out waiting for rank(s) {} to connect to {master}; did every worker start, with the same MASTER_ADDR and MASTER_PORT?",
                        missing.join(", ")
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(TrainError::Distributed(format!("accepting workers on {master}: {e}"))),
        }
    }
    Ok(streams.into_iter().map(|s| s.expect("all joined")).collect())
}

fn connect_to_master(topology: &Topology, deadline: Instant) -> Result<TcpStream> {
    let master = &topology.master;
    let mut last_error = String::from("not tried");
    while Instant::now() < deadline {
        let attempt = || -> std::io::Result<TcpStream> {
            let addr = master
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the address resolves to nothing"))?;
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.write_all(&hello(topology.rank, topology.world_size))?;
            let mut ack = [0u8; 24];
            stream.read_exact(&mut ack)?;
            stream.set_read_timeout(None)?;
            stream.set_nodelay(true)?;
            Ok(stream)
        };
        match attempt() {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(TrainError::Distributed(format!(
        "rank {} could not reach rank 0 at {master} (last error: {last_error}); is rank 0 running, with the same MASTER_ADDR and MASTER_PORT?",
        topology.rank
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// Runs `f` as each of `world` workers (threads) connected over loopback.
    fn workers<R: Send + 'static>(world: usize, f: impl Fn(usize, Link) -> R + Send + Sync + Clone + 'static) -> Vec<R> {
        let master = format!("127.0.0.1:{}", free_port());
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let (f, master) = (f.clone(), master.clone());
                std::thread::spawn(move || {
                    let topology = Topology { rank, world_size: world, local_rank: rank, local_world_size: world, master };
                    f(rank, Link::connect(&topology, Duration::from_secs(20)).unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn all_reduce_sums_in_rank_order_and_every_worker_gets_the_sum() {
        let results = workers(3, |rank, link| {
            // values whose f32 sum depends on the order: (1e8 + 1) - 1e8 = 0 in f32, but 1e8 - 1e8 + 1 = 1
            let mut values = [[1e8f32, 1.0, 2.0], [1.0, 2.0, 3.0], [-1e8, 3.0, 4.0]][rank];
            link.all_reduce(&mut values).unwrap();
            let mut scalars = [rank as f64, 0.5];
            link.all_reduce(&mut scalars).unwrap();
            link.all_reduce::<f64>(&mut []).unwrap();
            (values, scalars)
        });
        let in_rank_order = (1e8f32 + 1.0) + -1e8;
        for (values, scalars) in &results {
            assert_eq!(values, &[in_rank_order, 6.0, 9.0]);
            assert_eq!(scalars, &[3.0, 1.5]);
        }
    }

    #[test]
    fn reduce_scatter_gives_each_worker_its_chunk_of_the_rank_order_sum() {
        let results = workers(3, |rank, link| {
            // chunk 0 sums (1e8 + 1) - 1e8 in rank order, as all_reduce does
            let values = [[1e8f32, 1.0, 0.0, 1.0, 5.0, 1.0], [1.0, 2.0, 1.0, 1.0, 6.0, 1.0], [-1e8, 3.0, 2.0, 1.0, 7.0, 1.0]][rank];
            let mut reduced = values;
            link.all_reduce(&mut reduced).unwrap();
            (link.reduce_scatter(&values).unwrap(), reduced)
        });
        for (rank, (chunk, reduced)) in results.iter().enumerate() {
            assert_eq!(chunk, &reduced[rank * 2..rank * 2 + 2], "rank {rank}");
        }
        assert_eq!(results[0].0, [(1e8f32 + 1.0) + -1e8, 6.0]);
        assert_eq!(results[2].0, [18.0, 3.0]);
    }

    #[test]
    fn all_gather_concatenates_every_workers_bytes_in_rank_order_everywhere() {
        let results = workers(3, |rank, link| link.all_gather(&[rank as u8, 10 + rank as u8]).unwrap());
        assert!(results.iter().all(|r| r == &[0, 10, 1, 11, 2, 12]), "{results:?}");
        let diverged = workers(2, |rank, link| link.all_gather(&vec![0u8; 1 + rank]).err().map(|e| e.to_string()));
        assert!(diverged[0].as_deref().is_some_and(|e| e.contains("rank 1 all-gathers 2 bytes")), "{diverged:?}");
    }

    #[test]
    fn broadcast_carries_rank_zeros_bytes() {
        let results = workers(3, |rank, link| link.broadcast((rank == 0).then_some(b"nccl-id".as_slice())).unwrap());
        assert!(results.iter().all(|r| r == b"nccl-id"));
    }

    #[test]
    fn gather_brings_every_workers_bytes_to_rank_zero_in_rank_order() {
        let results = workers(3, |rank, link| link.gather(&vec![rank as u8; rank + 1]).unwrap());
        assert_eq!(results[0], Some(vec![vec![0], vec![1, 1], vec![2, 2, 2]]));
        assert_eq!(results[1..], [None, None]);
    }

    #[test]
    fn workers_that_diverge_get_an_error_naming_the_rank() {
        let results = workers(2, |rank, link| {
            let mut values = vec![0f32; 2 + rank];
            link.all_reduce(&mut values).err().map(|e| e.to_string())
        });
        let master_error = results[0].clone().expect("rank 0 sees the mismatch");
        assert!(master_error.contains("rank 1 is in a f32 sum of 3 values"), "{master_error}");
        assert!(results[1].is_some(), "rank 1 fails too once rank 0 gives up");
    }

    #[test]
    fn a_missing_worker_times_out_with_the_ranks_named() {
        let topology = Topology { rank: 0, world_size: 3, local_rank: 0, local_world_size: 3, master: format!("127.0.0.1:{}", free_port()) };
        let err = Link::connect(&topology, Duration::from_millis(200)).err().unwrap().to_string();
        assert!(err.contains("rank(s) 1, 2"), "{err}");
        let worker = Topology { rank: 1, ..topology };
        let err = Link::connect(&worker, Duration::from_millis(300)).err().unwrap().to_string();
        assert!(err.contains("rank 1 could not reach rank 0"), "{err}");
    }
}
