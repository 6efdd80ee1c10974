//! Reading git's object stores for the leak scan without git: every object of a pack file,
//! deltas resolved (a value split between a delta's base and its instructions is whole
//! again), and the test for a zlib stream, the form of a loose object. The files are
//! untrusted: sizes are checked against what is there, chains are walked without
//! recursion, and nothing is allocated on a header's word alone.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::rc::Rc;

use sha1::{Digest, Sha1};

/// How a pack is malformed, or why it could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("it has an entry of unknown type {kind} at offset {offset}")]
    Kind { kind: u8, offset: u64 },
    #[error("its delta at offset {offset} names a base outside the pack's start")]
    Base { offset: u64 },
    #[error("its entry at offset {offset} does not inflate to the {size} bytes it declares")]
    Inflate { offset: u64, size: u64 },
    #[error("its delta at offset {offset} does not apply to its base")]
    Delta { offset: u64 },
    #[error("its entry at offset {offset} is {size} bytes, more than the {MAX_OBJECT} bytes the scan reads")]
    TooBig { offset: u64, size: u64 },
}

/// Which object of a pack a callback is given.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PackedId {
    /// A whole object, by its id.
    Object(String),
    /// The instructions of the delta at this offset (its inserted bytes in the clear).
    Delta(u64),
}

impl std::fmt::Display for PackedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackedId::Object(id) => write!(f, "git object {id}"),
            PackedId::Delta(offset) => write!(f, "the git delta at offset {offset}"),
        }
    }
}

/// Whether `head` is the start of a pack (`PACK`, version 2 or 3).
pub(crate) fn is_pack(head: &[u8]) -> bool {
    head.len() >= 8 && &head[..4] == b"PACK" && matches!(head[4..8], [0, 0, 0, 2 | 3])
}

/// Whether `head` is the start of a zlib stream (deflate, a valid header checksum).
pub(crate) fn is_zlib(head: &[u8]) -> bool {
    head.len() >= 2 && head[0] & 0x0f == 8 && head[0] >> 4 <= 7 && {
        let word = u16::from(head[0]) << 8 | u16::from(head[1]);
        word % 31 == 0 && head[1] & 0x20 == 0
    }
}

/// The largest object the scan inflates: a few compressed bytes can claim (and a delta's
/// copies can make) gigabytes, which the scan must not hold for a hostile setup.
pub const MAX_OBJECT: u64 = 256 << 20;
/// The most an allocation is sized by a header before the data is seen.
const PREALLOC: usize = 1 << 20;
/// Resolved objects kept for later deltas, in bytes.
const CACHE: usize = 256 << 20;

const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

enum Base {
    None,
    Offset(u64),
    Id([u8; 20]),
}

struct Entry {
    offset: u64,
    kind: u8,
    size: u64,
    /// Where its zlib stream starts.
    data: u64,
    base: Base,
}

/// Calls `each` with every object of the pack in `file`, and with every delta's
/// instructions; a delta whose base is not in the pack is given only as instructions.
pub(crate) fn pack_objects<F: Read + Seek>(
    file: F,
    mut each: impl FnMut(&PackedId, &[u8]),
) -> Result<(), PackError> {
    let mut r = Counting {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
    };
    let mut header = [0u8; 12];
    r.read_exact(&mut header)?;
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    let mut entries: Vec<Entry> = Vec::new();
    let mut ids: HashMap<[u8; 20], usize> = HashMap::new();
    // Whole objects are hashed and given now; deltas are resolved once all are known.
    for _ in 0..count {
        let offset = r.pos;
        let (kind, size) = r.entry_header()?;
        let base = match kind {
            1..=4 => Base::None,
            OFS_DELTA => {
                let back = r.offset_encoding()?;
                Base::Offset(
                    offset
                        .checked_sub(back)
                        .filter(|_| back > 0)
                        .ok_or(PackError::Base { offset })?,
                )
            }
            REF_DELTA => {
                let mut id = [0u8; 20];
                r.read_exact(&mut id)?;
                Base::Id(id)
            }
            kind => return Err(PackError::Kind { kind, offset }),
        };
        let data = r.pos;
        let bytes = r.inflate(offset, size)?;
        if matches!(base, Base::None) {
            let id = object_id(kind, &bytes);
            each(&PackedId::Object(hex::encode(id)), &bytes);
            ids.insert(id, entries.len());
        } else {
            each(&PackedId::Delta(offset), &bytes);
        }
        entries.push(Entry {
            offset,
            kind,
            size,
            data,
            base,
        });
    }
    let by_offset: HashMap<u64, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.offset, i))
        .collect();
    let mut resolver = Resolver {
        r,
        entries: &entries,
        by_offset: &by_offset,
        cache: HashMap::new(),
        cached: 0,
    };
    // Rounds, because a ref delta may name an object that is itself a later delta.
    let mut pending: Vec<usize> = (0..entries.len())
        .filter(|&i| !matches!(entries[i].base, Base::None))
        .collect();
    loop {
        let before = pending.len();
        let mut left = Vec::new();
        for i in pending {
            match resolver.resolve(i, &ids)? {
                Some((kind, bytes)) => {
                    let id = object_id(kind, &bytes);
                    each(&PackedId::Object(hex::encode(id)), &bytes);
                    ids.entry(id).or_insert(i);
                }
                None => left.push(i),
            }
        }
        if left.is_empty() || left.len() == before {
            return Ok(());
        }
        pending = left;
    }
}

fn object_id(kind: u8, data: &[u8]) -> [u8; 20] {
    let name = match kind {
        1 => "commit",
        2 => "tree",
        3 => "blob",
        _ => "tag",
    };
    let mut h = Sha1::new();
    h.update(format!("{name} {}\0", data.len()));
    h.update(data);
    h.finalize().into()
}

/// An object's type and contents.
type Resolved = (u8, Rc<Vec<u8>>);

struct Resolver<'a, F> {
    r: Counting<F>,
    entries: &'a [Entry],
    by_offset: &'a HashMap<u64, usize>,
    /// Resolved objects by entry, with their kind.
    cache: HashMap<usize, Resolved>,
    cached: usize,
}

impl<F: Read + Seek> Resolver<'_, F> {
    /// Entry `i` as a whole object, or `None` while a ref delta's base is unknown.
    fn resolve(
        &mut self,
        i: usize,
        ids: &HashMap<[u8; 20], usize>,
    ) -> Result<Option<Resolved>, PackError> {
        // The chain down to a whole object (or one resolved before), walked iteratively.
        let entries = self.entries;
        let mut chain = vec![i];
        let (kind, mut bytes) = loop {
            let at = *chain.last().expect("the chain starts with i");
            if let Some((k, b)) = self.cache.get(&at) {
                let found = (*k, b.clone());
                chain.pop();
                break found;
            }
            let e = &entries[at];
            let next = match e.base {
                Base::None => {
                    chain.pop();
                    break (e.kind, Rc::new(self.read(at)?));
                }
                Base::Offset(o) => *self
                    .by_offset
                    .get(&o)
                    .ok_or(PackError::Base { offset: e.offset })?,
                Base::Id(id) => match ids.get(&id) {
                    Some(&n) => n,
                    None => return Ok(None),
                },
            };
            if chain.contains(&next) {
                return Ok(None);
            }
            chain.push(next);
        };
        while let Some(at) = chain.pop() {
            let delta = self.read(at)?;
            bytes = Rc::new(apply(&bytes, &delta).ok_or(PackError::Delta {
                offset: entries[at].offset,
            })?);
            self.keep(at, kind, bytes.clone());
        }
        Ok(Some((kind, bytes)))
    }

    fn read(&mut self, i: usize) -> Result<Vec<u8>, PackError> {
        let e = &self.entries[i];
        let (offset, size, data) = (e.offset, e.size, e.data);
        self.r.inner.seek(SeekFrom::Start(data))?;
        self.r.pos = data;
        self.r.inflate(offset, size)
    }

    fn keep(&mut self, i: usize, kind: u8, bytes: Rc<Vec<u8>>) {
        if self.cached + bytes.len() > CACHE {
            self.cache.clear();
            self.cached = 0;
        }
        self.cached += bytes.len();
        self.cache.insert(i, (kind, bytes));
    }
}

/// `delta` (git's copy/insert instructions) applied to `base`; `None` if they do not fit.
fn apply(base: &[u8], delta: &[u8]) -> Option<Vec<u8>> {
    let mut d = delta.iter().copied();
    let varint = |d: &mut dyn Iterator<Item = u8>| -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = d.next()?;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            shift += 7;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
    };
    let source = varint(&mut d)?;
    let target = varint(&mut d)?;
    if source != base.len() as u64 || target > MAX_OBJECT {
        return None;
    }
    let mut out = Vec::with_capacity((target as usize).min(PREALLOC));
    while let Some(op) = d.next() {
        if op & 0x80 != 0 {
            let mut word = |bits: u8, shift: u32| -> Option<usize> {
                Some(if op & bits != 0 {
                    usize::from(d.next()?) << shift
                } else {
                    0
                })
            };
            let offset = word(1, 0)? | word(2, 8)? | word(4, 16)? | word(8, 24)?;
            let mut size = word(0x10, 0)? | word(0x20, 8)? | word(0x40, 16)?;
            if size == 0 {
                size = 0x10000;
            }
            if (out.len() + size) as u64 > target {
                return None;
            }
            out.extend_from_slice(base.get(offset..offset.checked_add(size)?)?);
        } else if op != 0 {
            if (out.len() + usize::from(op)) as u64 > target {
                return None;
            }
            for _ in 0..op {
                out.push(d.next()?);
            }
        } else {
            return None;
        }
    }
    (out.len() as u64 == target).then_some(out)
}

/// A buffered reader that knows its position in the file.
struct Counting<F> {
    inner: BufReader<F>,
    pos: u64,
}

impl<F: Read> Read for Counting<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<F: Read> Counting<F> {
    fn byte(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    /// An entry's type and inflated size.
    fn entry_header(&mut self) -> Result<(u8, u64), PackError> {
        let mut b = self.byte()?;
        let kind = (b >> 4) & 7;
        let mut size = u64::from(b & 0x0f);
        let mut shift = 4;
        while b & 0x80 != 0 {
            b = self.byte()?;
            size |= u64::from(b & 0x7f)
                .checked_shl(shift)
                .filter(|_| shift < 64)
                .ok_or(PackError::Inflate {
                    offset: self.pos,
                    size: u64::MAX,
                })?;
            shift += 7;
        }
        Ok((kind, size))
    }

    /// An ofs delta's distance back to its base.
    fn offset_encoding(&mut self) -> Result<u64, PackError> {
        let mut b = self.byte()?;
        let mut v = u64::from(b & 0x7f);
        while b & 0x80 != 0 {
            b = self.byte()?;
            v = v
                .checked_add(1)
                .and_then(|v| v.checked_mul(128))
                .ok_or(PackError::Base { offset: self.pos })?
                | u64::from(b & 0x7f);
        }
        Ok(v)
    }

    /// The zlib stream here, which must inflate to exactly `size` bytes; the position
    /// ends just after it.
    fn inflate(&mut self, offset: u64, size: u64) -> Result<Vec<u8>, PackError> {
        if size > MAX_OBJECT {
            return Err(PackError::TooBig { offset, size });
        }
        let bad = || PackError::Inflate { offset, size };
        let mut z = flate2::Decompress::new(true);
        let mut out: Vec<u8> = Vec::with_capacity((size as usize).min(PREALLOC));
        loop {
            let input = self.inner.fill_buf()?;
            if input.is_empty() {
                return Err(bad());
            }
            if out.len() == out.capacity() {
                out.reserve((out.len()).clamp(4096, PREALLOC));
            }
            let (in_before, out_before) = (z.total_in(), z.total_out());
            let status = z
                .decompress_vec(input, &mut out, flate2::FlushDecompress::None)
                .map_err(|_| bad())?;
            let used = (z.total_in() - in_before) as usize;
            self.inner.consume(used);
            self.pos += used as u64;
            if z.total_out() > size {
                return Err(bad());
            }
            match status {
                flate2::Status::StreamEnd if z.total_out() == size => return Ok(out),
                flate2::Status::StreamEnd => return Err(bad()),
                _ if used == 0 && z.total_out() == out_before && out.len() < out.capacity() => {
                    return Err(bad())
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    fn header(kind: u8, size: usize) -> Vec<u8> {
        let mut out = vec![(kind << 4) | (size & 0x0f) as u8];
        let mut rest = size >> 4;
        while rest > 0 {
            *out.last_mut().unwrap() |= 0x80;
            out.push((rest & 0x7f) as u8);
            rest >>= 7;
        }
        out
    }

    /// A pack of a blob, an ofs delta on it and a ref delta on the blob.
    fn pack(base: &[u8], ofs_delta: &[u8], ref_delta: &[u8]) -> Vec<u8> {
        let mut p = b"PACK\0\0\0\x02\0\0\0\x03".to_vec();
        p.extend(header(3, base.len()));
        p.extend(zlib(base));
        let at = p.len();
        p.extend(header(OFS_DELTA, ofs_delta.len()));
        p.push((at - 12) as u8);
        p.extend(zlib(ofs_delta));
        p.extend(header(REF_DELTA, ref_delta.len()));
        p.extend(object_id(3, base));
        p.extend(zlib(ref_delta));
        p.extend([0u8; 20]);
        p
    }

    fn objects(pack: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        pack_objects(Cursor::new(pack), |id, data| {
            out.push((id.to_string(), String::from_utf8_lossy(data).into_owned()))
        })
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn check(pack: &[u8], expected: Result<&[(&str, &str)], &str>) {
        let expected = expected
            .map(|v| {
                v.iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect::<Vec<_>>()
            })
            .map_err(str::to_string);
        assert_eq!(objects(pack), expected);
    }

    #[test]
    fn packed_objects_come_whole_with_deltas_resolved() {
        // "hello wor" + "ld": the value `world` is in neither the base nor the delta.
        let base = b"hello wor";
        let delta = [&[9u8, 11, 0x90, 9, 2][..], b"ld"].concat();
        let replace = [&[9u8, 5, 0x90, 5][..]].concat();
        let blob = hex::encode(object_id(3, base));
        let hello_world = hex::encode(object_id(3, b"hello world"));
        let hello = hex::encode(object_id(3, b"hello"));
        check(
            &pack(base, &delta, &replace),
            Ok(&[
                (&format!("git object {blob}"), "hello wor"),
                ("the git delta at offset 30", "\t\u{b}\u{fffd}\t\u{2}ld"),
                ("the git delta at offset 47", "\t\u{5}\u{fffd}\u{5}"),
                (&format!("git object {hello_world}"), "hello world"),
                (&format!("git object {hello}"), "hello"),
            ]),
        );
        // A delta that copies past its base's end is a malformed pack.
        let past = [9u8, 20, 0x90, 20];
        check(
            &pack(base, &past, &replace),
            Err("its delta at offset 30 does not apply to its base"),
        );
        // A header's claim is checked before anything is allocated for it.
        let mut bomb = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
        bomb.extend(header(3, 1 << 30));
        bomb.extend(zlib(b"tiny"));
        check(
            &bomb,
            Err("its entry at offset 12 is 1073741824 bytes, more than the 268435456 bytes the scan reads"),
        );
        let mut truncated = pack(base, &delta, &replace);
        truncated.truncate(36);
        check(
            &truncated,
            Err("its entry at offset 30 does not inflate to the 7 bytes it declares"),
        );
    }

    #[test]
    fn zlib_and_pack_headers_are_told_apart() {
        assert!(is_zlib(&zlib(b"blob 3\0abc")));
        assert!(!is_zlib(b"xx"));
        assert!(!is_zlib(b"plain text"));
        assert!(is_pack(b"PACK\0\0\0\x02\0\0\0\x00"));
        assert!(!is_pack(b"PACKAGE.json"));
    }
}
