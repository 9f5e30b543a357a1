//! Bounded capture of command output: keeps the head and the tail, counts what was cut.

/// Collects bytes keeping at most `head_cap` bytes from the start and `tail_cap` from the end.
#[derive(Debug, Clone)]
pub struct CappedOutput {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    total: u64,
}

impl CappedOutput {
    /// `limit` is the total number of bytes kept (half head, half tail).
    pub fn new(limit: usize) -> Self {
        let head_cap = limit / 2;
        CappedOutput {
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            head_cap,
            tail_cap: limit - head_cap,
            total: 0,
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.head.len() < self.head_cap {
            let n = (self.head_cap - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.is_empty() || self.tail_cap == 0 {
            return;
        }
        if data.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_cap..]);
        } else {
            let overflow = (self.tail.len() + data.len()).saturating_sub(self.tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(data);
        }
    }

    /// Total bytes seen (kept or not).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes dropped from the middle.
    pub fn omitted(&self) -> u64 {
        self.total - self.head.len() as u64 - self.tail.len() as u64
    }

    /// The kept text; when bytes were cut, a marker line says how many and where.
    pub fn finish(self) -> String {
        let omitted = self.omitted();
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if omitted > 0 {
            out.push_str(&format!(
                "\n[... output clipped: {omitted} of {} bytes omitted from the middle; redirect to a file and use head/tail/grep to see it ...]\n",
                self.total
            ));
        }
        let tail: Vec<u8> = self.tail.into_iter().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = CappedOutput::new(100);
        c.push(b"hello ");
        c.push(b"world");
        assert_eq!(c.omitted(), 0);
        assert_eq!(c.finish(), "hello world");
    }

    #[test]
    fn large_output_keeps_head_and_tail_with_marker() {
        let mut c = CappedOutput::new(20);
        for i in 0..1000u32 {
            c.push(format!("{i:04}").as_bytes());
        }
        assert_eq!(c.total(), 4000);
        assert_eq!(c.omitted(), 3980);
        let s = c.finish();
        assert!(s.starts_with("0000000100\n[..."), "{s}");
        assert!(s.ends_with("9709980999"), "{s}");
        assert!(s.contains("3980 of 4000 bytes omitted"), "{s}");
    }

    #[test]
    fn one_big_chunk() {
        let mut c = CappedOutput::new(10);
        c.push(&[b'a'; 50]);
        c.push(b"0123456789");
        let s = c.finish();
        assert!(s.starts_with("aaaaa\n[..."));
        assert!(s.ends_with("56789"));
    }
}
