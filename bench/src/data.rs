//! Generated blob content: deterministic, unique per seed, never held whole in memory.
//!
//! A blob of `size` bytes with seed `s` is a sequence of 1 MiB blocks; block `k` is a
//! 16-byte header (`s`, `k`, little-endian) followed by the bytes 16.. of one shared
//! pseudo-random 1 MiB pattern. Two blobs with different seeds differ in every block, so
//! content-addressed deduplication cannot fake a push, and the body is streamed as
//! `Bytes` pieces that share the pattern (no copy per block).

use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

pub const BLOCK: u64 = 1 << 20;
const HEADER: u64 = 16;

/// The shared 1 MiB pseudo-random pattern.
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut out = Vec::with_capacity(BLOCK as usize);
        while out.len() < BLOCK as usize {
            out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
        }
        Bytes::from(out)
    })
}

pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One generated blob.
#[derive(Clone, Copy, Debug)]
pub struct Blob {
    pub seed: u64,
    pub size: u64,
}

impl Blob {
    pub fn new(seed: u64, size: u64) -> Blob {
        Blob { seed, size }
    }

    /// The pieces that make up `range` of the blob, in order.
    pub fn pieces(self, range: Range<u64>) -> impl Iterator<Item = Bytes> + Send + 'static {
        let end = range.end.min(self.size);
        let start = range.start.min(end);
        let first = start / BLOCK;
        let last = end.div_ceil(BLOCK);
        (first..last).flat_map(move |k| {
            let block_start = k * BLOCK;
            let block_len = BLOCK.min(self.size - block_start);
            let lo = start.saturating_sub(block_start);
            let hi = (end - block_start).min(block_len);
            let mut out: [Option<Bytes>; 2] = [None, None];
            if lo < HEADER.min(hi) {
                let mut header = [0u8; HEADER as usize];
                header[..8].copy_from_slice(&self.seed.to_le_bytes());
                header[8..].copy_from_slice(&k.to_le_bytes());
                out[0] = Some(Bytes::copy_from_slice(
                    &header[lo as usize..HEADER.min(hi) as usize],
                ));
            }
            if hi > HEADER {
                out[1] = Some(pattern().slice(lo.max(HEADER) as usize..hi as usize));
            }
            out.into_iter().flatten()
        })
    }

    /// `range` as a body stream.
    pub fn stream(
        self,
        range: Range<u64>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures::stream::iter(self.pieces(range).map(Ok))
    }

    /// The whole blob in memory (small blobs only).
    pub fn to_bytes(self) -> Bytes {
        let mut v = Vec::with_capacity(self.size as usize);
        for p in self.pieces(0..self.size) {
            v.extend_from_slice(&p);
        }
        Bytes::from(v)
    }

    /// `sha256:<hex>` of the blob (one pass over the generator).
    pub fn digest(self) -> String {
        let mut h = Sha256::new();
        for p in self.pieces(0..self.size) {
            h.update(&p);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// Whether `data` equals bytes `offset..offset + data.len()` of the blob.
    pub fn matches(self, offset: u64, data: &[u8]) -> bool {
        let mut pos = 0usize;
        for p in self.pieces(offset..offset + data.len() as u64) {
            if data.get(pos..pos + p.len()) != Some(&p[..]) {
                return false;
            }
            pos += p.len();
        }
        pos == data.len()
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Compares a streamed body with the blob it should be, piece by piece.
pub struct Checker {
    blob: Blob,
    offset: u64,
    pub ok: bool,
}

impl Checker {
    pub fn new(blob: Blob, offset: u64) -> Checker {
        Checker {
            blob,
            offset,
            ok: true,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.ok && !self.blob.matches(self.offset, chunk) {
            self.ok = false;
        }
        self.offset += chunk.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_ranges() {
        let b = Blob::new(7, 3 * BLOCK + 100);
        let all = b.to_bytes();
        assert_eq!(all.len() as u64, b.size);
        for (s, e) in [
            (0, 5),
            (3, 40),
            (BLOCK - 3, BLOCK + 20),
            (0, b.size),
            (b.size - 1, b.size),
        ] {
            let mut v = Vec::new();
            for p in b.pieces(s..e) {
                v.extend_from_slice(&p);
            }
            assert_eq!(&v[..], &all[s as usize..e as usize]);
            assert!(b.matches(s, &v));
        }
        assert_ne!(Blob::new(8, 100).to_bytes(), Blob::new(7, 100).to_bytes());
        assert_eq!(b.digest(), sha256_digest(&all));
    }
}
