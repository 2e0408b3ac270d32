//! An object fetched in parts side by side, as lancache fetches slices.
//!
//! DO's clients ask for shuffled 1 MiB ranges from the first moment. One
//! sequential download answers a range only once it reaches it, and an
//! origin that paces each response (a CDN does) makes that slow for the
//! whole object: 256 MiB at 20 MB/s a flow took upcache 14.6 s where
//! lancache, asking for each slice on its own, took 4 s (`benches/README.md`).
//! So an object of [`PART_MIN`] twice over or more is laid out in up to
//! `do_download_parts` parts of equal size (16 by default: with an origin
//! pacing each response to 20 MB/s, 16 parts fetched the 256 MiB object for
//! 50 clients in 2.4 s where 8 took 3.2 s under cubic, 3.0-3.1 s where 8
//! took 3.6 s under BBR). The download's own transfer fetches
//! part 0; each other part has a worker of its own, one bounded range
//! request (resumed after a cut) written at its offsets through a
//! [`PartWriter`]. Followers read any byte a part has written. Every byte
//! is asked of the origin once.
//!
//! The SHA-256 (and SHA-1) are computed in order, as for any download:
//! once part 0 is written, the transfer *adopts* the next parts as they
//! fill, reading their bytes back from the file (the page cache) into the
//! hashes. The file's last byte is held back until the whole is verified,
//! as always. A part whose worker gives up (a non-transient failure, or
//! its resumes spent) is fetched on from where it stopped by the transfer
//! itself, which then fails the download if the failure was the object's.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::store::PartWriter;

/// The smallest part: below twice this an object is fetched in one piece.
pub(super) const PART_MIN: u64 = 8 << 20;
/// Parts start on this boundary (DO asks for 1 MiB-aligned ranges, so a
/// range rarely spans two parts).
const ALIGN: u64 = 1 << 20;
/// What an object's first request asks for: the whole of a small object,
/// and no more than part 0 of a large one.
pub(super) const FIRST_SPAN: u64 = PART_MIN;

/// An object's parts and how far each has been written.
#[derive(Debug)]
pub struct Parts {
    spans: Vec<Range<u64>>,
    /// Bytes written from each part's start.
    filled: Vec<AtomicU64>,
    /// Each part's worker has given up (the transfer fetches the rest).
    abandoned: Vec<AtomicBool>,
}

impl Parts {
    /// The parts of an object of `total` bytes, at most `most` of them, or
    /// `None` when it is fetched in one piece.
    pub(super) fn layout(total: u64, most: u64) -> Option<Parts> {
        let count = (total / PART_MIN).min(most);
        if count < 2 {
            return None;
        }
        let size = total.div_ceil(count).div_ceil(ALIGN) * ALIGN;
        let spans: Vec<Range<u64>> = (0..count)
            .map(|i| (i * size).min(total)..((i + 1) * size).min(total))
            .filter(|span| !span.is_empty())
            .collect();
        Some(Parts {
            filled: spans.iter().map(|_| AtomicU64::new(0)).collect(),
            abandoned: spans.iter().map(|_| AtomicBool::new(false)).collect(),
            spans,
        })
    }

    /// How many parts there are.
    pub(super) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Part `i`'s bytes.
    pub(super) fn span(&self, i: usize) -> Range<u64> {
        self.spans[i].clone()
    }

    /// Where part `i`'s written bytes end.
    pub(super) fn written_to(&self, i: usize) -> u64 {
        self.spans[i].start + self.filled[i].load(Ordering::SeqCst)
    }

    /// Records `n` more bytes written to part `i`.
    pub(super) fn wrote(&self, i: usize, n: u64) {
        self.filled[i].fetch_add(n, Ordering::SeqCst);
    }

    /// Part `i`'s worker gave up: the transfer fetches the rest.
    pub(super) fn abandon(&self, i: usize) {
        self.abandoned[i].store(true, Ordering::SeqCst);
    }

    pub(super) fn is_abandoned(&self, i: usize) -> bool {
        self.abandoned[i].load(Ordering::SeqCst)
    }

    /// Bytes written in all. The download's own transfer has written the
    /// first `first` (part 0, the parts it adopted, and the rest of any
    /// part it took over from a worker that gave up); each part counts
    /// what its worker or the transfer wrote of it, whichever is more.
    pub(super) fn written_total(&self, first: u64) -> u64 {
        self.spans
            .iter()
            .zip(&self.filled)
            .map(|(span, filled)| {
                let by_transfer = first.clamp(span.start, span.end) - span.start;
                by_transfer.max(filled.load(Ordering::SeqCst))
            })
            .sum()
    }

    /// How far the bytes from `pos` are written without a gap, if the
    /// byte at `pos` is (within its part: the next part may lag).
    pub(super) fn written_from(&self, pos: u64) -> Option<u64> {
        let i = self.spans.iter().position(|s| s.contains(&pos))?;
        let to = self.written_to(i);
        (to > pos).then_some(to)
    }
}

/// What a part's worker writes with: its part, and the file.
pub(super) struct PartSink<'a> {
    pub parts: &'a Parts,
    pub index: usize,
    pub writer: &'a PartWriter,
}

impl PartSink<'_> {
    /// Where the next byte of the part goes.
    pub(super) fn pos(&self) -> u64 {
        self.parts.written_to(self.index)
    }

    /// The part's end.
    pub(super) fn end(&self) -> u64 {
        self.parts.spans[self.index].end
    }

    /// Writes `chunk` at the part's next byte; refuses bytes past its end.
    pub(super) fn write(&self, chunk: &[u8]) -> std::io::Result<()> {
        let pos = self.pos();
        if pos + chunk.len() as u64 > self.end() {
            return Err(std::io::Error::other(format!(
                "the origin sent more than part {} asked for",
                self.index
            )));
        }
        self.writer.write_at(chunk, pos)?;
        self.parts.wrote(self.index, chunk.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_objects_are_one_piece_and_large_ones_up_to_the_most_aligned_parts() {
        assert!(Parts::layout(8 * MIB, 16).is_none());
        assert!(Parts::layout(16 * MIB - 1, 16).is_none());
        assert!(Parts::layout(256 * MIB, 1).is_none(), "one part: one piece");
        let two = Parts::layout(16 * MIB, 16).unwrap();
        assert_eq!(two.spans, vec![0..8 * MIB, 8 * MIB..16 * MIB]);
        let eight = Parts::layout(256 * MIB, 8).unwrap();
        assert_eq!(eight.len(), 8);
        assert_eq!(eight.span(1), 32 * MIB..64 * MIB);
        assert_eq!(eight.span(7).end, 256 * MIB);
        // An odd length: aligned starts, the last part shorter, all covered.
        let odd = Parts::layout(100 * MIB + 5, 16).unwrap();
        assert!(odd.spans.iter().all(|s| s.start % MIB == 0));
        assert_eq!(odd.spans.first().unwrap().start, 0);
        assert_eq!(odd.spans.last().unwrap().end, 100 * MIB + 5);
        assert!(odd.spans.windows(2).all(|w| w[0].end == w[1].start));
        assert!(odd.span(0).end - odd.span(0).start >= FIRST_SPAN);
    }

    #[test]
    fn written_bytes_are_readable_within_their_part_only() {
        let parts = Parts::layout(16 * MIB, 16).unwrap();
        assert_eq!(parts.written_from(8 * MIB), None);
        parts.wrote(1, 1000);
        assert_eq!(parts.written_from(8 * MIB), Some(8 * MIB + 1000));
        assert_eq!(parts.written_from(8 * MIB + 999), Some(8 * MIB + 1000));
        assert_eq!(parts.written_from(8 * MIB + 1000), None);
        assert_eq!(parts.written_from(0), None, "part 0 has nothing yet");
        assert_eq!(parts.written_from(16 * MIB), None, "past the end");
    }

    #[test]
    fn the_total_counts_each_part_once_whoever_wrote_it() {
        let parts = Parts::layout(32 * MIB, 4).unwrap();
        assert_eq!(parts.written_total(0), 0);
        parts.wrote(1, 3 * MIB);
        parts.wrote(3, MIB);
        assert_eq!(
            parts.written_total(5 * MIB),
            9 * MIB,
            "part 0 is the transfer's"
        );
        // Part 1 adopted: its bytes are counted once.
        assert_eq!(parts.written_total(11 * MIB), 12 * MIB);
        // Its worker gave up at 11 MiB; the transfer took part 1 over and
        // is 2 MiB into part 2, whose worker never wrote.
        assert_eq!(parts.written_total(18 * MIB), 19 * MIB);
        assert_eq!(parts.written_total(32 * MIB), 32 * MIB);
    }
}
