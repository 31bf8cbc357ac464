//! Test support: a small seeded mutator for the parser property tests (arbitrary and mutated
//! bytes must give errors, never panics). Hand-rolled on our own RNG so every failure replays.

use crate::rng::Rng;

/// A mutated copy of `seed`: every 8th round fully random bytes, otherwise 1–8 edits of the
/// kinds that break parsers (bit flips, random bytes, truncation, duplicated spans, boundary
/// values such as 0xFF.. and 0x00.. written over 4 or 8 bytes, which is where sizes live).
pub fn mutate(seed: &[u8], rng: &mut Rng, round: u64) -> Vec<u8> {
    if round % 8 == 7 || seed.is_empty() {
        let n = rng.below(96) as usize;
        return (0..n).map(|_| rng.next_u64() as u8).collect();
    }
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len() as u64) as usize;
        match rng.below(6) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = rng.next_u64() as u8,
            2 => b.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(16) as usize).min(b.len());
                let span = b[at..end].to_vec();
                b.splice(at..at, span);
            }
            4 => {
                let fill = if rng.chance(0.5) { 0xFF } else { 0x00 };
                let width = if rng.chance(0.5) { 4 } else { 8 };
                let end = (at + width).min(b.len());
                b[at..end].fill(fill);
            }
            _ => {
                let v = rng.next_u64().to_le_bytes();
                let end = (at + 8).min(b.len());
                b[at..end].copy_from_slice(&v[..end - at]);
            }
        }
    }
    b
}
