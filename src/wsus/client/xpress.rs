//! The `xpress` content coding of the update server's answers ([MS-WUSP]
//! section 2.1): a client that sends `Accept-Encoding: xpress` gets its
//! SOAP answer compressed, with `Content-Encoding: xpress`.
//!
//! What the specifications say, and what this module does with it:
//!
//! - [MS-WUSP] 2.1: a client SHOULD add `xpress` to `Accept-Encoding` for
//!   the client and SimpleAuth web services; when it does, the server
//!   SHOULD encode its answer so. (A Windows 11 client recorded against a
//!   real WSUS sent `Accept-Encoding: xpress` to the reporting service too
//!   and got its 406-byte answer back as `Content-Encoding: xpress`, with
//!   `Vary: Accept-Encoding`; upcache encodes every SOAP answer of the
//!   three services for a client that asks.)
//! - [MS-WUSP] 2.1.1, the framing: the body is cut into blocks of at most
//!   65,535 bytes, each compressed on its own ("CompressOrDecompressWin2k3",
//!   2.1.1.1) to at most 65,535 bytes, and each preceded by an 8-byte
//!   header: `original` then `compressed`, each a signed 32-bit
//!   little-endian integer (the block's uncompressed, then compressed,
//!   size). upcache cuts at 65,535 bytes; a block that would not compress
//!   under the bound (random bytes, never XML) is cut in two. Nothing in
//!   the text reached here says what a server does with an incompressible
//!   block, nor what footnote <8> on the block size says.
//! - [MS-WUSP] 2.1.1.1.1 (LZ77) and 2.1.1.1.2 (DIRECT2), the block: a
//!   32-bit bitmask, read from its high bit down, says of each element in
//!   turn whether it is a literal byte (0) or a match (1); a new bitmask
//!   follows when one is used up. A match is 2 bytes: the high 13 bits
//!   are the distance minus one (so at most 8,192 back), the low 3 bits
//!   the length minus 3 (3..=9); `111` means the length goes on in a
//!   4-bit nibble (10..=24), a nibble byte shared by two matches (the first
//!   takes its low nibble, the next long one its high nibble); a full
//!   nibble goes on in a byte (25..=279); a full byte in a 16-bit word that
//!   holds the whole length minus 3 (280 and up). After the last element
//!   the bitmask MUST carry one more 1 bit, "even if an additional bitmask
//!   has to be allocated": that is the end mark. DIRECT2 does not say in
//!   which byte order a bitmask is stored.
//! - [MS-XCA] 2.3 and 2.4 ("Plain LZ77") describe the same bytes as
//!   pseudocode, little-endian bitmasks and 16-bit words, unused bitmask
//!   bits set to 1, and one more form: a 16-bit length of 0 is followed by
//!   a 32-bit one. Its examples (section 3.1) are this module's
//!   known-answer tests, and the DIRECT2 length table's rows (24, 25, 279,
//!   280, 281) are too. Microsoft's Open Specifications support said in
//!   2022 that [MS-DRSR]'s Win2k3 compression (the same text as [MS-WUSP]
//!   2.1.1.1) "uses a different API" than [MS-XCA]; the two texts agree on
//!   every byte this encoder writes (no 32-bit lengths: a block is never
//!   that long). The decoder takes the [MS-XCA] form too.
//!
//! The encoder is a hash-chain LZ77 over the 8 KiB window (a few
//! candidates per position, greedy), fast enough for a page per scan
//! (benches/README.md has the figures). The decoder is for tests, the
//! fuzzer and tools: bounded by the caller's limit and by each block's
//! declared size, it never writes past either and answers malformed input
//! with an [`XpressError`], never a panic.

/// The token a client sends in `Accept-Encoding`, and the
/// `Content-Encoding` of an answer so encoded (as a real WSUS sends it).
pub const CODING: &str = "xpress";

/// Largest block, compressed or not ([MS-WUSP] 2.1.1).
pub const MAX_BLOCK: usize = 65_535;

/// Farthest a match reaches back: 13 bits of distance.
const WINDOW: usize = 8192;
const MIN_MATCH: usize = 3;
const HASH_BITS: u32 = 14;
/// Candidates tried per position; a match this long ends the search.
const MAX_CHAIN: usize = 24;
const NICE_LENGTH: usize = 256;
const NONE: u32 = u32::MAX;

/// Why a body is not valid `xpress`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XpressError {
    #[error("a block header is cut short: {0} bytes left")]
    TruncatedHeader(usize),
    #[error("a block header declares {original} bytes from {compressed}: outside 0..=65535")]
    BlockSize { original: i32, compressed: i32 },
    #[error("a block declares {declared} compressed bytes, {left} are left")]
    TruncatedBlock { declared: usize, left: usize },
    #[error("the compressed block ends inside an element")]
    Truncated,
    #[error("a match reaches {distance} bytes back, {available} are written in the block")]
    DistanceBeforeStart { distance: usize, available: usize },
    #[error("the block decodes to more than the {0} bytes its header declares")]
    TooLong(usize),
    #[error("the block ends after {got} of the {declared} bytes its header declares")]
    TooShort { got: usize, declared: usize },
    #[error("a 16-bit match length of {0} is below the 22 the encoding allows")]
    BadLength(u32),
    #[error("the decoded body is over {0} bytes")]
    TooLarge(usize),
}

/// Whether `Accept-Encoding` (every such header) names `xpress` with a
/// weight above zero (RFC 9110 12.5.3).
pub fn accepted(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            coding.eq_ignore_ascii_case(CODING)
                && parts.all(|p| {
                    let (name, value) = p.split_once('=').unwrap_or((p, ""));
                    !name.trim().eq_ignore_ascii_case("q")
                        || value.trim().parse::<f32>().map_or(true, |q| q > 0.0)
                })
        })
}

/// `input` as an `xpress` body: blocks of at most [`MAX_BLOCK`] bytes,
/// each with its header. An empty input is an empty body.
pub fn encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 + 64);
    let mut finder = Finder::default();
    for block in input.chunks(MAX_BLOCK) {
        put_block(&mut finder, block, &mut out);
    }
    out
}

/// One block and its header; cut in two while it does not compress
/// within [`MAX_BLOCK`] (only incompressible bytes do not).
fn put_block(finder: &mut Finder, block: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; 8]);
    compress_block(finder, block, out);
    let size = out.len() - at - 8;
    if size > MAX_BLOCK {
        out.truncate(at);
        let (a, b) = block.split_at(block.len() / 2);
        put_block(finder, a, out);
        put_block(finder, b, out);
        return;
    }
    // Both fit: at most 65,535.
    out[at..at + 4].copy_from_slice(&(block.len() as i32).to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&(size as i32).to_le_bytes());
}

/// The hash chains of one block: `head` by hash of 3 bytes, `prev` by
/// position (kept between blocks to reuse their memory).
struct Finder {
    head: Vec<u32>,
    prev: Vec<u32>,
}

impl Default for Finder {
    fn default() -> Self {
        Finder {
            head: vec![NONE; 1 << HASH_BITS],
            prev: Vec::new(),
        }
    }
}

impl Finder {
    fn reset(&mut self, len: usize) {
        self.head.fill(NONE);
        self.prev.clear();
        self.prev.resize(len, NONE);
    }

    fn hash(block: &[u8], at: usize) -> usize {
        let v =
            u32::from(block[at]) | u32::from(block[at + 1]) << 8 | u32::from(block[at + 2]) << 16;
        (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    }

    /// Enters position `at` (which has 3 bytes after it).
    fn insert(&mut self, block: &[u8], at: usize) {
        let h = Self::hash(block, at);
        self.prev[at] = self.head[h];
        self.head[h] = at as u32;
    }

    /// The longest match for `at` within the window: (distance, length).
    fn longest(&self, block: &[u8], at: usize) -> Option<(usize, usize)> {
        let max = block.len() - at;
        let mut best: Option<(usize, usize)> = None;
        let mut candidate = self.head[Self::hash(block, at)];
        for _ in 0..MAX_CHAIN {
            if candidate == NONE {
                break;
            }
            let from = candidate as usize;
            let distance = at - from;
            if distance > WINDOW {
                break;
            }
            let length = common_length(block, from, at, max);
            if length >= MIN_MATCH && best.is_none_or(|(_, l)| length > l) {
                best = Some((distance, length));
                if length >= NICE_LENGTH.min(max) {
                    break;
                }
            }
            candidate = self.prev[from];
        }
        best
    }
}

/// How many bytes at `a` and at `b` (`a < b`) agree, at most `max`.
fn common_length(block: &[u8], a: usize, b: usize, max: usize) -> usize {
    let mut n = 0;
    while n + 8 <= max {
        let x = u64::from_le_bytes(block[a + n..a + n + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(block[b + n..b + n + 8].try_into().expect("8 bytes"));
        let diff = x ^ y;
        if diff != 0 {
            return n + (diff.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while n < max && block[a + n] == block[b + n] {
        n += 1;
    }
    n
}

/// Compresses one block onto `out` (no header).
fn compress_block(finder: &mut Finder, block: &[u8], out: &mut Vec<u8>) {
    finder.reset(block.len());
    let mut w = Writer::new(out);
    let mut at = 0;
    while at < block.len() {
        if at + MIN_MATCH > block.len() {
            w.literal(block[at]);
            at += 1;
            continue;
        }
        let found = finder.longest(block, at);
        finder.insert(block, at);
        match found {
            Some((distance, length)) => {
                w.matched(distance, length);
                for p in at + 1..at + length {
                    if p + MIN_MATCH <= block.len() {
                        finder.insert(block, p);
                    }
                }
                at += length;
            }
            None => {
                w.literal(block[at]);
                at += 1;
            }
        }
    }
    w.finish();
}

/// Literals and matches with their bitmasks, per [MS-WUSP] 2.1.1.1.2.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    flags: u32,
    count: u32,
    /// Where the bitmask being filled goes.
    flags_at: usize,
    /// A nibble byte whose high half is free for the next long match.
    shared: Option<usize>,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        let flags_at = out.len();
        out.extend_from_slice(&[0; 4]);
        Writer {
            out,
            flags: 0,
            count: 0,
            flags_at,
            shared: None,
        }
    }

    fn flag(&mut self, bit: u32) {
        self.flags = (self.flags << 1) | bit;
        self.count += 1;
        if self.count == 32 {
            self.put_flags();
            self.flags = 0;
            self.count = 0;
            self.flags_at = self.out.len();
            self.out.extend_from_slice(&[0; 4]);
        }
    }

    fn put_flags(&mut self) {
        let at = self.flags_at;
        self.out[at..at + 4].copy_from_slice(&self.flags.to_le_bytes());
    }

    fn literal(&mut self, byte: u8) {
        self.out.push(byte);
        self.flag(0);
    }

    /// A match: `distance` in 1..=8192, `length` at least 3.
    fn matched(&mut self, distance: usize, length: usize) {
        debug_assert!((1..=WINDOW).contains(&distance) && length >= MIN_MATCH);
        let offset = ((distance - 1) as u16) << 3;
        let extra = length - MIN_MATCH;
        if extra < 7 {
            self.out
                .extend_from_slice(&(offset | extra as u16).to_le_bytes());
        } else {
            self.out.extend_from_slice(&(offset | 7).to_le_bytes());
            let rest = extra - 7;
            let nibble = rest.min(15) as u8;
            match self.shared.take() {
                Some(at) => self.out[at] |= nibble << 4,
                None => {
                    self.shared = Some(self.out.len());
                    self.out.push(nibble);
                }
            }
            if rest >= 15 {
                let rest = rest - 15;
                if rest < 255 {
                    self.out.push(rest as u8);
                } else {
                    self.out.push(255);
                    // The whole length minus 3, not what is left of it.
                    match u16::try_from(extra) {
                        Ok(word) => self.out.extend_from_slice(&word.to_le_bytes()),
                        Err(_) => {
                            self.out.extend_from_slice(&[0, 0]);
                            self.out.extend_from_slice(&(extra as u32).to_le_bytes());
                        }
                    }
                }
            }
        }
        self.flag(1);
    }

    /// The end mark: the next flag is 1, and so are the unused ones.
    fn finish(mut self) {
        let free = 32 - self.count;
        self.flags = if free == 32 {
            u32::MAX
        } else {
            (self.flags << free) | ((1u32 << free) - 1)
        };
        self.put_flags();
    }
}

/// The bytes of an `xpress` body, at most `limit` of them.
pub fn decode(body: &[u8], limit: usize) -> Result<Vec<u8>, XpressError> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let Some((header, after)) = rest.split_first_chunk::<8>() else {
            return Err(XpressError::TruncatedHeader(rest.len()));
        };
        let original = i32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let compressed = i32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let (Ok(declared), Ok(size)) = (usize::try_from(original), usize::try_from(compressed))
        else {
            return Err(XpressError::BlockSize {
                original,
                compressed,
            });
        };
        if declared > MAX_BLOCK || size > MAX_BLOCK {
            return Err(XpressError::BlockSize {
                original,
                compressed,
            });
        }
        if size > after.len() {
            return Err(XpressError::TruncatedBlock {
                declared: size,
                left: after.len(),
            });
        }
        if out.len() + declared > limit {
            return Err(XpressError::TooLarge(limit));
        }
        decompress_block(&after[..size], declared, &mut out)?;
        rest = &after[size..];
    }
    Ok(out)
}

/// Appends one block's `declared` bytes to `out`; its matches reach back
/// only into this block.
fn decompress_block(input: &[u8], declared: usize, out: &mut Vec<u8>) -> Result<(), XpressError> {
    let start = out.len();
    let end = start + declared;
    out.reserve(declared);
    let mut r = Reader { input, at: 0 };
    let (mut flags, mut count) = (0u32, 0u32);
    let mut shared: Option<usize> = None;
    loop {
        if count == 0 {
            flags = r.u32()?;
            count = 32;
        }
        count -= 1;
        if flags & (1 << count) == 0 {
            let byte = r.u8()?;
            if out.len() == end {
                return Err(XpressError::TooLong(declared));
            }
            out.push(byte);
            continue;
        }
        if r.at == input.len() {
            // The end mark.
            return match out.len() == end {
                true => Ok(()),
                false => Err(XpressError::TooShort {
                    got: out.len() - start,
                    declared,
                }),
            };
        }
        let word = r.u16()?;
        let distance = usize::from(word >> 3) + 1;
        let mut length = usize::from(word & 7);
        if length == 7 {
            let nibble = match shared.take() {
                Some(at) => input[at] >> 4,
                None => {
                    shared = Some(r.at);
                    r.u8()? & 0x0f
                }
            };
            length = usize::from(nibble);
            if length == 15 {
                length = usize::from(r.u8()?);
                if length == 255 {
                    let mut whole = u32::from(r.u16()?);
                    if whole == 0 {
                        whole = r.u32()?;
                    }
                    if whole < 15 + 7 {
                        return Err(XpressError::BadLength(whole));
                    }
                    // Saturating: on a 32-bit target a 32-bit length still
                    // cannot wrap (it is over any block anyway).
                    length = usize::try_from(whole - 15 - 7).unwrap_or(usize::MAX);
                }
                length = length.saturating_add(15);
            }
            length = length.saturating_add(7);
        }
        length = length.saturating_add(MIN_MATCH);
        let available = out.len() - start;
        if distance > available {
            return Err(XpressError::DistanceBeforeStart {
                distance,
                available,
            });
        }
        if length > end - out.len() {
            return Err(XpressError::TooLong(declared));
        }
        let from = out.len() - distance;
        if distance >= length {
            out.extend_from_within(from..from + length);
        } else {
            // Overlapping: each byte may be one this match just wrote.
            for i in 0..length {
                let byte = out[from + i];
                out.push(byte);
            }
        }
    }
}

/// Little-endian reads that fail past the end.
struct Reader<'a> {
    input: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], XpressError> {
        let bytes = self
            .input
            .get(self.at..self.at + N)
            .ok_or(XpressError::Truncated)?;
        self.at += N;
        Ok(bytes.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, XpressError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, XpressError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, XpressError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    /// One block's body with its [MS-WUSP] 2.1.1 header.
    fn framed(original: usize, block: &[u8]) -> Vec<u8> {
        let mut out = (original as i32).to_le_bytes().to_vec();
        out.extend_from_slice(&(block.len() as i32).to_le_bytes());
        out.extend_from_slice(block);
        out
    }

    /// xorshift64*: deterministic bytes, as random as compression sees.
    fn random(seed: u64, size: usize) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(size + 8);
        while out.len() < size {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(size);
        out
    }

    fn round_trip(input: &[u8]) -> Vec<u8> {
        let body = encode(input);
        let back = decode(&body, input.len()).unwrap_or_else(|e| panic!("{e}"));
        assert!(back == input, "round trip of {} bytes differs", input.len());
        // Every header within the bounds, every block decodable alone.
        let mut rest = &body[..];
        while !rest.is_empty() {
            let original = i32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let size = i32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
            assert!(original <= MAX_BLOCK && size <= MAX_BLOCK);
            rest = &rest[8 + size..];
        }
        body
    }

    /// [MS-XCA] 3.1: the alphabet, 26 literals and six unused flags set.
    #[test]
    fn the_spec_alphabet_example_is_our_bytes_both_ways() {
        let block = hex(
            "3f 00 00 00 61 62 63 64 65 66 67 68 69 6a 6b 6c 6d 6e 6f 70 71 72 73 74 75 76 77 78 79 7a",
        );
        let text = b"abcdefghijklmnopqrstuvwxyz";
        assert_eq!(decode(&framed(26, &block), 1 << 20).unwrap(), text);
        assert_eq!(encode(text), framed(26, &block));
    }

    /// [MS-XCA] 3.1: `abc` then a match of distance 3 and length 297, its
    /// length through the nibble, the byte and the 16-bit word (294).
    #[test]
    fn the_spec_long_match_example_is_our_bytes_both_ways() {
        let block = hex("ff ff ff 1f 61 62 63 17 00 0f ff 26 01");
        let text = b"abc".repeat(100);
        assert_eq!(decode(&framed(300, &block), 1 << 20).unwrap(), text);
        assert_eq!(encode(&text), framed(300, &block));
    }

    /// [MS-WUSP] 2.1.1.1.2: metadata 0x0018 is distance 4, length 3; the
    /// rows of its length table (24, 25, 279, 280, 281) at distance 4.
    #[test]
    fn the_direct2_length_table_rows_are_our_bytes() {
        let flags = "ff ff ff 0f"; // four literals, the match, the end mark
        for (length, tail) in [
            (3, "18 00"),
            (9, "1e 00"),
            (10, "1f 00 00"),
            (24, "1f 00 0e"),
            (25, "1f 00 0f 00"),
            (26, "1f 00 0f 01"),
            (279, "1f 00 0f fe"),
            (280, "1f 00 0f ff 15 01"),
            (281, "1f 00 0f ff 16 01"),
        ] {
            let text: Vec<u8> = b"abcd".iter().copied().cycle().take(4 + length).collect();
            let block = hex(&format!("{flags} 61 62 63 64 {tail}"));
            assert_eq!(encode(&text), framed(text.len(), &block), "length {length}");
            assert_eq!(decode(&framed(text.len(), &block), 1 << 20).unwrap(), text);
        }
    }

    /// Two long matches share one nibble byte: the first its low half, the
    /// second its high half; a third takes a new byte.
    #[test]
    fn long_matches_share_their_nibble_bytes() {
        // a, a×12 (distance 1, 12: nibble 2), b, b×11 (nibble 1), c, c×13.
        let mut text = b"a".repeat(13);
        text.extend(b"b".repeat(12));
        text.extend(b"c".repeat(14));
        let body = encode(&text);
        assert_eq!(
            body[8..],
            hex("ff ff ff 57 61 07 00 12 62 07 00 63 07 00 03")[..],
            "{body:02x?}"
        );
        assert_eq!(decode(&body, 1 << 20).unwrap(), text);
    }

    #[test]
    fn round_trips_at_every_size_that_matters() {
        round_trip(b"");
        assert!(encode(b"").is_empty());
        for size in [1, 2, 3, 4, 31, 32, 33, 64, 65] {
            round_trip(&random(size as u64, size));
            round_trip(&vec![b'x'; size]);
        }
        for size in [
            MAX_BLOCK - 1,
            MAX_BLOCK,
            MAX_BLOCK + 1,
            65_536,
            65_537,
            3 * 65_536,
        ] {
            round_trip(&random(7, size));
            let body = round_trip(&vec![0u8; size]);
            assert!(body.len() < 3_000, "{size} zeros took {}", body.len());
            let xml: Vec<u8> = b"<UpdateInfo><ID>1</ID><Deployment><Action>Install</Action></Deployment></UpdateInfo>"
                .iter()
                .copied()
                .cycle()
                .take(size)
                .collect();
            round_trip(&xml);
        }
    }

    #[test]
    fn incompressible_blocks_are_cut_to_stay_within_the_bound() {
        let input = random(42, 200_000);
        let body = round_trip(&input);
        // 12.5 % of bitmasks and the headers, nothing more.
        assert!(body.len() < input.len() * 113 / 100, "{}", body.len());
    }

    #[test]
    fn matches_reach_8192_back_and_no_farther() {
        let chunk = random(3, 8192);
        // The same 8 KiB again: one match at distance 8192.
        let mut text = chunk.clone();
        text.extend_from_slice(&chunk);
        let body = round_trip(&text);
        assert!(body.len() < 8192 + 1100, "{}", body.len());
        // One byte farther: nothing to find, all literals.
        let mut text = chunk.clone();
        text.push(0x55);
        text.extend_from_slice(&chunk);
        let body = round_trip(&text);
        assert!(body.len() > 2 * 8192, "{}", body.len());
    }

    #[test]
    fn long_matches_cross_every_length_form() {
        for length in [3, 9, 10, 24, 25, 279, 280, 281, 4096, 65_000, 65_530] {
            let mut text = random(length as u64, 5);
            let seed = text.clone();
            while text.len() < 5 + length {
                text.push(seed[text.len() % 5]);
            }
            round_trip(&text);
        }
    }

    #[test]
    fn seeded_random_inputs_round_trip() {
        for seed in 0..200u64 {
            let size = (seed * 7919 % 20_000) as usize;
            // Runs of repeats over a small alphabet: many match forms.
            let noise = random(seed, size);
            let text: Vec<u8> = noise
                .iter()
                .enumerate()
                .map(|(i, b)| if b % 3 == 0 { noise[i / 2] % 4 } else { b % 4 })
                .collect();
            round_trip(&text);
            round_trip(&noise);
        }
    }

    #[test]
    fn a_32_bit_length_from_the_xca_form_decodes() {
        // 'a', then distance 1 with 16-bit length 0 and 32-bit 294 (297).
        let block = hex("ff ff ff 7f 61 07 00 0f ff 00 00 26 01 00 00");
        assert_eq!(
            decode(&framed(298, &block), 1 << 20).unwrap(),
            vec![b'a'; 298]
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let good = encode(&b"abc".repeat(100));
        // Truncated anywhere: the body, or the block (its header adjusted).
        for cut in 1..good.len() {
            assert!(decode(&good[..cut], 1 << 20).is_err(), "cut at {cut}");
            if cut > 8 {
                let block = framed(300, &good[8..cut]);
                assert!(decode(&block, 1 << 20).is_err(), "block cut at {cut}");
            }
        }
        // A match before the start of the block.
        let back = framed(4, &hex("ff ff ff 7f 61 08 00"));
        assert_eq!(
            decode(&back, 100),
            Err(XpressError::DistanceBeforeStart {
                distance: 2,
                available: 1
            })
        );
        // Output longer than declared: by a literal, by a match.
        let text = framed(2, &hex("ff ff ff 1f 61 62 63"));
        assert_eq!(decode(&text, 100), Err(XpressError::TooLong(2)));
        let long = framed(3, &hex("ff ff ff 7f 61 00 00"));
        assert_eq!(decode(&long, 100), Err(XpressError::TooLong(3)));
        // Shorter than declared at the end mark.
        let short = framed(27, &hex(
            "3f 00 00 00 61 62 63 64 65 66 67 68 69 6a 6b 6c 6d 6e 6f 70 71 72 73 74 75 76 77 78 79 7a",
        ));
        assert!(matches!(
            decode(&short, 100),
            Err(XpressError::TooShort { .. })
        ));
        // Headers: negative, over the bound, more than is left, cut short.
        let mut negative = framed(26, &[]);
        negative[..4].copy_from_slice(&(-1i32).to_le_bytes());
        assert!(matches!(
            decode(&negative, 100),
            Err(XpressError::BlockSize { .. })
        ));
        assert!(matches!(
            decode(&framed(70_000, &[]), 1 << 20),
            Err(XpressError::BlockSize { .. })
        ));
        let mut over = good.clone();
        over[4..8].copy_from_slice(&1000i32.to_le_bytes());
        assert!(matches!(
            decode(&over, 1 << 20),
            Err(XpressError::TruncatedBlock { .. })
        ));
        assert_eq!(
            decode(&good[..5], 100),
            Err(XpressError::TruncatedHeader(5))
        );
        // A 16-bit length below what the form allows.
        let bad = framed(100, &hex("ff ff ff 7f 61 07 00 0f ff 05 00"));
        assert_eq!(decode(&bad, 1 << 20), Err(XpressError::BadLength(5)));
        // The caller's limit.
        assert_eq!(decode(&good, 299), Err(XpressError::TooLarge(299)));
    }

    #[test]
    fn random_bytes_never_panic() {
        for seed in 0..3000u64 {
            let mut body = random(seed, (seed % 200) as usize);
            if seed % 2 == 0 && body.len() >= 8 {
                // A plausible header, so the block decoder sees the bytes.
                let size = (body.len() - 8) as i32;
                body[..4].copy_from_slice(&((seed % 700) as i32).to_le_bytes());
                body[4..8].copy_from_slice(&size.to_le_bytes());
            }
            let _ = decode(&body, 1 << 16);
        }
    }

    #[test]
    fn accept_encoding_names_xpress_as_a_token() {
        let with = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(http::header::ACCEPT_ENCODING, v.parse().unwrap());
            }
            accepted(&h)
        };
        assert!(with(&["xpress"]));
        assert!(with(&["gzip, XPRESS"]));
        assert!(with(&["gzip", "xpress;q=0.5"]));
        assert!(!with(&[]));
        assert!(!with(&["gzip, deflate"]));
        assert!(!with(&["xpress2"]));
        assert!(!with(&["xpress;q=0"]));
        assert!(!with(&["xpress; q=0.000"]));
    }
}
