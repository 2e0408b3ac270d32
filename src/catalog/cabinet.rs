//! Microsoft ships its catalog as cabinets: `wsusscn2.cab` holds
//! `package.cab`, which holds `package.xml` (LZX-compressed; the `cab`
//! crate decodes it), and the detail cabinets `index.xml` names (see
//! `scancab`). The XML is handed on in chunks, never whole.
//!
//! A cabinet compresses its members as one stream per folder, and the
//! `cab` crate decompresses a folder from its start for every member it
//! opens: reading a detail cabinet's tens of thousands of members one by
//! one would decompress it tens of thousands of times. [`for_each_member`]
//! reads each folder once instead, by showing the crate a header that
//! lists one member per folder spanning all of it, and cutting the members
//! out of that stream by the offsets the real header gives.
//!
//! [`read_wsusscn2`] reads the outer cabinet that way too, in one pass
//! when its members come in an order that allows it: `package.xml` goes
//! to the server before any document, and which members are detail
//! cabinets is known only from `index.xml`, so a detail cabinet that
//! comes before `index.xml` or `package.cab` in the stream is read in a
//! second pass (that stops after the last one), not held: holding it
//! would take its expanded documents on disk until then, up to every
//! detail cabinet's. Two passes is the floor for such an order.

use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::Path;

use super::scancab::{self, DetailCabinet, Part};

const XML: &str = "package.xml";
const INNER: &str = "package.cab";
const INDEX: &str = "index.xml";

/// What [`read_wsusscn2`] hands on, in this order: `package.xml`, in
/// chunks, then its end; then each detail cabinet's documents.
pub trait Wsusscn2Sink {
    /// The next piece of `package.xml`.
    fn package_xml(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// `package.xml` was handed on whole.
    fn package_end(&mut self) -> io::Result<()>;
    /// One detail cabinet's documents: its name (as `index.xml` has it),
    /// a temp file of JSON lines (one `{"rid": n, "doc": "..."}` each,
    /// then `{"end": count}`) and what was read; the file is gone once
    /// dropped.
    fn documents(&mut self, cabinet: &str, lines: File, read: DetailRead) -> io::Result<()>;
}

/// How [`read_wsusscn2`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wsusscn2Read {
    /// Whether the cabinet has an `index.xml` (none: no detail cabinets,
    /// a bare `package.cab` or a cabinet holding `package.xml` only).
    pub had_index: bool,
    /// Passes over the outer cabinet's stream: 1, or 2 when a detail
    /// cabinet came before `index.xml` or `package.cab` (the second stops
    /// after the last one).
    pub passes: u32,
}

/// Reads `wsusscn2.cab` (or `package.cab`) at `path` in one pass where
/// its order allows (see the module's docs): `package.xml` out of
/// `package.cab` (spilled to an unlinked temp file: the inner cabinet
/// needs seeking) or out of the cabinet itself, then, for each detail
/// cabinet `index.xml` names, its fragments (core, extended, and
/// localized in `languages`) spooled to a scratch database keyed by
/// revision id and assembled into documents, one cabinet at a time.
/// Memory holds one fragment or document at a time; disk, one spilled
/// detail cabinet with its scratch database and what `sink` keeps.
pub fn read_wsusscn2(
    path: &Path,
    languages: &[String],
    sink: &mut dyn Wsusscn2Sink,
) -> io::Result<Wsusscn2Read> {
    let order = stream_order(&mut File::open(path)?)?;
    let named = |want: &str| order.iter().find(|n| n.eq_ignore_ascii_case(want)).cloned();
    let Some(package) = named(XML).or_else(|| named(INNER)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds neither {XML} nor {INNER}", path.display()),
        ));
    };
    let mut outer = Outer {
        package,
        package_done: false,
        has_index: named(INDEX).is_some(),
        index: None,
        present: order,
        done: Vec::new(),
        early: false,
        languages,
    };
    // Pass 1: everything that may be needed.
    let wanted: Vec<String> = outer
        .present
        .iter()
        .filter(|n| **n == outer.package || n.eq_ignore_ascii_case(INDEX) || maybe_detail(n))
        .cloned()
        .collect();
    for_each_member(
        File::open(path)?,
        &|n| wanted.iter().any(|w| w == n),
        &mut |name, member| outer.take(name, member, sink),
    )?;
    if !outer.package_done {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} ends before its {XML}", path.display()),
        ));
    }
    let mut passes = 1;
    // Pass 2: the detail cabinets that came too early.
    let left = outer.left();
    if outer.early && !left.is_empty() {
        passes = 2;
        for_each_member(
            File::open(path)?,
            &|n| left.iter().any(|w| w == n),
            &mut |name, member| outer.take(name, member, sink),
        )?;
    }
    Ok(Wsusscn2Read {
        had_index: outer.has_index,
        passes,
    })
}

/// One reading of the outer cabinet: what is known, what is done.
struct Outer<'a> {
    /// The member holding `package.xml` (`package.xml` or `package.cab`).
    package: String,
    package_done: bool,
    has_index: bool,
    index: Option<Vec<DetailCabinet>>,
    /// Every member's name.
    present: Vec<String>,
    /// The detail cabinets handed on (by their member names).
    done: Vec<String>,
    /// Whether a member that may be a detail cabinet came before
    /// `index.xml` or the package.
    early: bool,
    languages: &'a [String],
}

/// Whether member `name` may be a detail cabinet (`index.xml` says).
fn maybe_detail(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".cab") && !name.eq_ignore_ascii_case(INNER)
}

impl Outer<'_> {
    /// The detail cabinets named and present, not handed on yet.
    fn left(&self) -> Vec<String> {
        let Some(index) = &self.index else {
            return Vec::new();
        };
        self.present
            .iter()
            .filter(|n| index.iter().any(|d| d.name.eq_ignore_ascii_case(n)))
            .filter(|n| !self.done.contains(n))
            .cloned()
            .collect()
    }

    /// Whether nothing more is needed of the stream.
    fn finished(&self) -> bool {
        self.package_done && (!self.has_index || (self.index.is_some() && self.left().is_empty()))
    }

    /// Handles one member of the stream.
    fn take(
        &mut self,
        name: &str,
        member: &mut dyn Read,
        sink: &mut dyn Wsusscn2Sink,
    ) -> io::Result<ControlFlow<()>> {
        if name == self.package && !self.package_done {
            if name.eq_ignore_ascii_case(XML) {
                pump(member, &mut |c| sink.package_xml(c))?;
            } else {
                // The inner cabinet needs Seek: spill it to an unlinked temp file.
                let mut scratch = crate::store::scratch_file()?;
                io::copy(member, &mut scratch)?;
                scratch.seek(SeekFrom::Start(0))?;
                let mut inner = cab::Cabinet::new(scratch)?;
                let xml = inner
                    .folder_entries()
                    .flat_map(|f| f.file_entries())
                    .map(|f| f.name().to_owned())
                    .find(|n| n.eq_ignore_ascii_case(XML))
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{INNER} holds no {XML}"),
                        )
                    })?;
                pump(inner.read_file(&xml)?, &mut |c| sink.package_xml(c))?;
            }
            sink.package_end()?;
            self.package_done = true;
        } else if name.eq_ignore_ascii_case(INDEX) && self.index.is_none() {
            let mut xml = Vec::new();
            member
                .take(scancab::MAX_INDEX as u64 + 1)
                .read_to_end(&mut xml)?;
            let index = scancab::parse_index(&xml)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.index = Some(index);
        } else if maybe_detail(name) && !self.done.iter().any(|d| d == name) {
            let detail = self.index.as_ref().map(|index| {
                index
                    .iter()
                    .find(|d| d.name.eq_ignore_ascii_case(name))
                    .map(|d| d.name.clone())
            });
            match detail {
                // Before index.xml: perhaps one; after the package: for the second pass.
                None => self.early = true,
                Some(Some(_)) if !self.package_done => self.early = true,
                Some(Some(cabinet)) => {
                    let mut spilled = crate::store::scratch_file()?;
                    io::copy(member, &mut spilled)?;
                    let (lines, read) = documents_of(spilled, self.languages)?;
                    sink.documents(&cabinet, lines, read)?;
                    self.done.push(name.to_owned());
                }
                Some(None) => {}
            }
        }
        Ok(if self.finished() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }
}

fn pump(
    mut reader: impl Read,
    each_chunk: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        each_chunk(&buf[..n])?;
    }
}

/// One member of a cabinet, from its `CFFILE` entry.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    folder: u16,
    offset: u64,
    size: u64,
}

/// Most bytes of a cabinet header read (`CFFILE` entries are at most
/// 16 + 256 bytes, and a cabinet lists at most 65,535).
const MAX_HEADER: u64 = 64 << 20;

/// Reads a cabinet's header: its bytes up to the `CFFILE` table, that
/// table's length, and its members.
fn read_header(file: &mut File) -> io::Result<(Vec<u8>, usize, Vec<Member>)> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("cabinet: {why}"));
    file.seek(SeekFrom::Start(0))?;
    let mut fixed = [0u8; 36];
    file.read_exact(&mut fixed)?;
    if &fixed[..4] != b"MSCF" {
        return Err(bad("no MSCF signature"));
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let files_at = u32_at(&fixed, 16) as u64;
    let count = u16_at(&fixed, 28);
    if !(36..=MAX_HEADER).contains(&files_at) {
        return Err(bad("CFFILE table out of range"));
    }
    let mut head = vec![0u8; files_at as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut head)?;
    let mut table = io::BufReader::new(&mut *file);
    let mut members = Vec::with_capacity(count as usize);
    let mut table_len = 0usize;
    for _ in 0..count {
        let mut entry = [0u8; 16];
        table.read_exact(&mut entry)?;
        let mut name = Vec::new();
        (&mut table).take(257).read_until(0, &mut name)?;
        if name.pop() != Some(0) {
            return Err(bad("a member name is not terminated"));
        }
        table_len += 16 + name.len() + 1;
        members.push(Member {
            name: String::from_utf8_lossy(&name).into_owned(),
            size: u32_at(&entry, 0) as u64,
            offset: u32_at(&entry, 4) as u64,
            folder: u16_at(&entry, 8),
        });
    }
    Ok((head, table_len, members))
}

/// A cabinet with its `CFFILE` table replaced: reads below `patch.len()`
/// come from `patch`, the rest (folders' data) from the file.
struct Patched {
    file: File,
    patch: Vec<u8>,
    pos: u64,
}

impl Read for Patched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(rest) = self
            .patch
            .get(self.pos as usize..)
            .filter(|r| !r.is_empty())
        {
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.pos += n as u64;
            return Ok(n);
        }
        self.file.seek(SeekFrom::Start(self.pos))?;
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Patched {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::Current(d) => self
                .pos
                .checked_add_signed(d)
                .ok_or(io::ErrorKind::InvalidInput)?,
            SeekFrom::End(d) => {
                let end = self.file.seek(SeekFrom::End(0))?;
                end.checked_add_signed(d)
                    .ok_or(io::ErrorKind::InvalidInput)?
            }
        };
        Ok(self.pos)
    }
}

/// The names of the members of the cabinet in `file`, in the order
/// [`for_each_member`] hands them on (folder by folder, by offset).
fn stream_order(file: &mut File) -> io::Result<Vec<String>> {
    let (_, _, mut members) = read_header(file)?;
    members.sort_by_key(|m| (m.folder, m.offset));
    Ok(members.into_iter().map(|m| m.name).collect())
}

/// What [`for_each_member`] hands each member to: its name and bytes;
/// `Break` when no more are needed.
pub type EachMember<'a> = dyn FnMut(&str, &mut dyn Read) -> io::Result<ControlFlow<()>> + 'a;

/// Streams the members of the cabinet in `file` that `want` names, each
/// folder decompressed once (and one holding none of them not at all),
/// handing each member's name and bytes to `each` in folder order (what
/// `each` leaves unread is skipped) until it answers `Break`.
pub fn for_each_member(
    mut file: File,
    want: &dyn Fn(&str) -> bool,
    each: &mut EachMember<'_>,
) -> io::Result<()> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("cabinet: {why}"));
    let (mut head, table_len, members) = read_header(&mut file)?;
    // 0xFFFD.. are members continued from or into another cabinet of a set.
    if let Some(m) = members.iter().find(|m| m.folder >= 0xFFFD) {
        return Err(bad(format!("{} spans cabinets (not supported)", m.name)));
    }
    let mut folders: Vec<u16> = members.iter().map(|m| m.folder).collect();
    folders.sort_unstable();
    folders.dedup();
    let mut table = Vec::new();
    for &f in &folders {
        let span = members
            .iter()
            .filter(|m| m.folder == f)
            .map(|m| m.offset + m.size)
            .max()
            .unwrap_or(0);
        let span = u32::try_from(span).map_err(|_| bad(format!("folder {f} too large")))?;
        table.extend_from_slice(&span.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        table.extend_from_slice(&f.to_le_bytes());
        table.extend_from_slice(&[0; 6]);
        table.extend_from_slice(f.to_string().as_bytes());
        table.push(0);
    }
    if table.len() > table_len {
        return Err(bad("member names too short to list folders".into()));
    }
    head[28..30].copy_from_slice(&(folders.len() as u16).to_le_bytes());
    head.extend_from_slice(&table);
    let mut cabinet = cab::Cabinet::new(Patched {
        file,
        patch: head,
        pos: 0,
    })?;
    let mut buf = vec![0u8; 64 * 1024];
    for &f in &folders {
        let mut in_folder: Vec<&Member> = members.iter().filter(|m| m.folder == f).collect();
        in_folder.sort_by_key(|m| m.offset);
        let Some(last) = in_folder.iter().rposition(|m| want(&m.name)) else {
            continue;
        };
        in_folder.truncate(last + 1);
        let mut stream = cabinet.read_file(&f.to_string())?;
        let mut at = 0u64;
        for m in in_folder {
            if m.offset < at {
                return Err(bad(format!("{} overlaps the member before it", m.name)));
            }
            io::copy(&mut (&mut stream).take(m.offset - at), &mut io::sink())?;
            let mut member = (&mut stream).take(m.size);
            let flow = if want(&m.name) {
                each(&m.name, &mut member)?
            } else {
                ControlFlow::Continue(())
            };
            // Skip what `each` left, and fail on a short folder.
            loop {
                let n = member.read(&mut buf)?;
                if n == 0 {
                    break;
                }
            }
            if member.limit() != 0 {
                return Err(bad(format!("{} is cut short", m.name)));
            }
            if flow.is_break() {
                return Ok(());
            }
            at = m.offset + m.size;
        }
    }
    Ok(())
}

/// What reading one detail cabinet found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DetailRead {
    /// Documents assembled (lines written).
    pub documents: u64,
    /// Fragments kept (of the wanted languages).
    pub fragments: u64,
    /// Revisions whose fragments did not assemble: (revision id, why).
    pub skipped: Vec<(u64, String)>,
}

/// The largest fragment read (one document's bound).
const MAX_FRAGMENT: u64 = crate::metadata::update_xml::MAX_DOCUMENT as u64;

/// One revision's fragments, read from the scratch database.
struct Fragments {
    rid: u64,
    core: Option<Vec<u8>>,
    extended: Option<Vec<u8>>,
    localized: Vec<Vec<u8>>,
}

impl Fragments {
    /// Assembles the document and writes its line, or notes why not.
    fn write(self, read: &mut DetailRead, out: &mut impl Write) -> io::Result<()> {
        let rid = self.rid;
        let Some(core) = self.core else {
            read.skipped
                .push((rid, format!("no core fragment c/{rid}")));
            return Ok(());
        };
        let locals: Vec<&[u8]> = self.localized.iter().map(Vec::as_slice).collect();
        match scancab::assemble(&core, self.extended.as_deref(), &locals) {
            Ok(doc) => {
                serde_json::to_writer(&mut *out, &serde_json::json!({ "rid": rid, "doc": doc }))?;
                out.write_all(b"\n")?;
                read.documents += 1;
            }
            Err(e) => read.skipped.push((rid, e.to_string())),
        }
        Ok(())
    }
}

/// One detail cabinet's documents, as [`Wsusscn2Sink::documents`] takes them.
fn documents_of(cabinet: File, languages: &[String]) -> io::Result<(File, DetailRead)> {
    let db = |e: rusqlite::Error| io::Error::other(format!("scratch database: {e}"));
    // A private temporary database on disk, deleted when closed.
    let scratch = rusqlite::Connection::open("").map_err(db)?;
    scratch
        .execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             CREATE TABLE frag (rid INTEGER NOT NULL, part INTEGER NOT NULL, lang TEXT NOT NULL,
                                body BLOB NOT NULL, PRIMARY KEY (rid, part, lang));",
        )
        .map_err(db)?;
    let mut read = DetailRead::default();
    {
        let mut insert = scratch
            .prepare("INSERT OR REPLACE INTO frag VALUES (?1, ?2, ?3, ?4)")
            .map_err(db)?;
        scratch.execute_batch("BEGIN").map_err(db)?;
        let wanted = |name: &str| match scancab::member(name) {
            Some((_, Part::Localized(lang))) => scancab::wanted_language(&lang, languages),
            Some(_) => true,
            None => false,
        };
        for_each_member(cabinet, &wanted, &mut |name, member| {
            let Some((rid, part)) = scancab::member(name) else {
                return Ok(ControlFlow::Continue(()));
            };
            let mut body = Vec::new();
            member.take(MAX_FRAGMENT + 1).read_to_end(&mut body)?;
            if body.len() as u64 > MAX_FRAGMENT {
                read.skipped
                    .push((rid, format!("{name} is larger than {MAX_FRAGMENT} bytes")));
                return Ok(ControlFlow::Continue(()));
            }
            let (kind, lang) = part.key();
            insert
                .execute(rusqlite::params![rid as i64, kind, lang, body])
                .map_err(db)?;
            read.fragments += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        scratch.execute_batch("COMMIT").map_err(db)?;
    }
    let mut out = io::BufWriter::new(crate::store::scratch_file()?);
    let mut rows = scratch
        .prepare("SELECT rid, part, body FROM frag ORDER BY rid, part, lang")
        .map_err(db)?;
    let mut rows = rows.query([]).map_err(db)?;
    let mut current: Option<Fragments> = None;
    while let Some(row) = rows.next().map_err(db)? {
        let rid = row.get::<_, i64>(0).map_err(db)? as u64;
        let part: u8 = row.get(1).map_err(db)?;
        let body: Vec<u8> = row.get(2).map_err(db)?;
        if current.as_ref().is_none_or(|c| c.rid != rid) {
            if let Some(done) = current.take() {
                done.write(&mut read, &mut out)?;
            }
            current = Some(Fragments {
                rid,
                core: None,
                extended: None,
                localized: Vec::new(),
            });
        }
        let c = current.as_mut().expect("set above");
        match part {
            0 => c.core = Some(body),
            1 => c.extended = Some(body),
            _ => c.localized.push(body),
        }
    }
    if let Some(done) = current.take() {
        done.write(&mut read, &mut out)?;
    }
    writeln!(out, "{}", serde_json::json!({ "end": read.documents }))?;
    let mut lines = out.into_inner().map_err(|e| e.into_error())?;
    lines.seek(SeekFrom::Start(0))?;
    Ok((lines, read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn cabinet(name: &str, bytes: &[u8]) -> Vec<u8> {
        let mut builder = cab::CabinetBuilder::new();
        builder
            .add_folder(cab::CompressionType::MsZip)
            .add_file(name);
        let mut writer = builder.build(Cursor::new(Vec::new())).unwrap();
        while let Some(mut w) = writer.next_file().unwrap() {
            w.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    /// A cabinet of `folders`, each a list of (name, bytes).
    fn multi(folders: &[&[(&str, Vec<u8>)]]) -> Vec<u8> {
        let mut builder = cab::CabinetBuilder::new();
        for files in folders {
            let folder = builder.add_folder(cab::CompressionType::MsZip);
            for (name, _) in files.iter() {
                folder.add_file(*name);
            }
        }
        let mut writer = builder.build(Cursor::new(Vec::new())).unwrap();
        let all: Vec<&Vec<u8>> = folders
            .iter()
            .flat_map(|f| f.iter().map(|(_, b)| b))
            .collect();
        let mut i = 0;
        while let Some(mut w) = writer.next_file().unwrap() {
            w.write_all(all[i]).unwrap();
            i += 1;
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn every_member_is_streamed_once_with_its_bytes() {
        let big: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let folders: &[&[(&str, Vec<u8>)]] = &[
            &[
                ("c\\1", b"one".to_vec()),
                ("x\\1", big.clone()),
                ("l\\en\\1", Vec::new()),
            ],
            &[("c\\2", b"two".to_vec())],
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detail.cab");
        std::fs::write(&path, multi(folders)).unwrap();
        let mut got = Vec::new();
        for_each_member(File::open(&path).unwrap(), &|_| true, &mut |name, r| {
            let mut b = Vec::new();
            if name != "c\\2" {
                r.read_to_end(&mut b)?;
            }
            got.push((name.to_owned(), b));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["c\\1", "x\\1", "l\\en\\1", "c\\2"]);
        assert_eq!(got[0].1, b"one");
        assert!(got[1].1 == big);
        std::fs::write(&path, b"MSCF but not a cabinet").unwrap();
        let bad = for_each_member(File::open(&path).unwrap(), &|_| true, &mut |_, _| {
            Ok(ControlFlow::Continue(()))
        });
        assert!(bad.is_err());
    }

    #[test]
    fn a_detail_cabinet_becomes_documents_and_a_bad_revision_is_skipped() {
        let core = |id: &str| {
            format!("<UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"1\" /><Properties UpdateType=\"Software\" />").into_bytes()
        };
        let en =
            b"<LocalizedProperties><Language>en</Language><Title>T</Title></LocalizedProperties>"
                .to_vec();
        let de =
            b"<LocalizedProperties><Language>de</Language><Title>D</Title></LocalizedProperties>"
                .to_vec();
        let folders: &[&[(&str, Vec<u8>)]] = &[&[
            ("c/11", core("a")),
            ("c/12", b"<UpdateIdentity".to_vec()),
            ("e/11", b"eula".to_vec()),
            ("l/de/11", de),
            ("l/en/11", en),
            ("x/13", b"<Files/>".to_vec()),
        ]];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("package2.cab");
        std::fs::write(&path, multi(folders)).unwrap();
        let (mut lines, read) =
            documents_of(File::open(&path).unwrap(), &["en".to_owned()]).unwrap();
        assert_eq!((read.documents, read.fragments), (1, 4));
        let skipped: Vec<u64> = read.skipped.iter().map(|s| s.0).collect();
        assert_eq!(skipped, [12, 13]);
        let mut text = String::new();
        lines.read_to_string(&mut text).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["rid"], 11);
        let doc = lines[0]["doc"].as_str().unwrap();
        assert!(
            doc.contains("<Title>T</Title>") && !doc.contains("<Title>D</Title>"),
            "{doc}"
        );
        assert_eq!(lines[1]["end"], 1);
    }

    /// What [`read_wsusscn2`] handed on, in order.
    #[derive(Default)]
    struct Taken {
        xml: Vec<u8>,
        /// `package_end`, then each cabinet's name and documents, in order.
        events: Vec<String>,
    }

    impl Wsusscn2Sink for Taken {
        fn package_xml(&mut self, chunk: &[u8]) -> io::Result<()> {
            assert!(self.events.is_empty(), "package.xml after its end");
            self.xml.extend_from_slice(chunk);
            Ok(())
        }
        fn package_end(&mut self) -> io::Result<()> {
            self.events.push("package end".into());
            Ok(())
        }
        fn documents(&mut self, cabinet: &str, _: File, read: DetailRead) -> io::Result<()> {
            self.events
                .push(format!("{cabinet}: {} documents", read.documents));
            Ok(())
        }
    }

    fn read(path: &Path) -> io::Result<(Taken, Wsusscn2Read)> {
        let mut taken = Taken::default();
        let how = read_wsusscn2(path, &["en".to_owned()], &mut taken)?;
        Ok((taken, how))
    }

    #[test]
    fn reads_package_xml_through_both_cabinets() {
        let xml = b"<OfflineSyncPackage/>".repeat(50_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wsusscn2.cab");
        std::fs::write(&path, cabinet(INNER, &cabinet(XML, &xml))).unwrap();
        let (taken, how) = read(&path).unwrap();
        assert!(taken.xml == xml);
        assert_eq!(taken.events, ["package end"]);
        assert!(!how.had_index);
        std::fs::write(&path, cabinet(XML, &xml)).unwrap();
        assert!(read(&path).unwrap().0.xml == xml);
        std::fs::write(&path, cabinet("other.txt", b"x")).unwrap();
        assert!(read(&path).is_err());
        std::fs::write(&path, cabinet(INNER, &cabinet("other.xml", b"x"))).unwrap();
        assert!(read(&path).is_err());
    }

    /// Bytes of 2 MiB that do not compress (xorshift), so that a pass
    /// over them shows in the bytes read.
    fn noise() -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        (0..2 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A `wsusscn2.cab` of one folder holding `order`'s members: `noise`
    /// (not read), `index.xml`, `package.cab` and detail cabinets
    /// `package2.cab` and `package3.cab`, of one revision each.
    fn wsusscn2(order: &[&str]) -> Vec<u8> {
        let detail = |rid: u32| {
            let core = format!(
                "<UpdateIdentity UpdateID=\"{rid:08}-0000-4000-8000-000000000001\" RevisionNumber=\"1\" /><Properties UpdateType=\"Software\" />"
            );
            multi(&[&[(&format!("c/{rid}"), core.into_bytes())]])
        };
        let index = br#"<INDEX><CABLIST><CAB NAME="package.cab" RANGESTART="0"/>
            <CAB NAME="package2.cab" RANGESTART="0"/><CAB NAME="package3.cab" RANGESTART="3"/></CABLIST></INDEX>"#;
        let members: Vec<(&str, Vec<u8>)> = order
            .iter()
            .map(|&name| {
                let bytes = match name {
                    "noise" => noise(),
                    INDEX => index.to_vec(),
                    INNER => cabinet(XML, b"<OfflineSyncPackage/>"),
                    "package2.cab" => detail(2),
                    "package3.cab" => detail(3),
                    other => panic!("{other}"),
                };
                (name, bytes)
            })
            .collect();
        multi(&[&members])
    }

    /// Bytes this thread has read (`read(2)` and the like) so far.
    #[cfg(target_os = "linux")]
    fn bytes_read() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn the_outer_cabinet_is_read_once_when_index_and_package_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wsusscn2.cab");
        let bytes = wsusscn2(&["noise", INDEX, INNER, "package2.cab", "package3.cab"]);
        std::fs::write(&path, &bytes).unwrap();
        #[cfg(target_os = "linux")]
        let before = bytes_read();
        let (taken, how) = read(&path).unwrap();
        #[cfg(target_os = "linux")]
        {
            // Once is ~1.0x (the three passes before read 3.0x).
            let times = (bytes_read() - before) as f64 / bytes.len() as f64;
            assert!(times < 1.5, "read {times:.2}x the cabinet");
        }
        assert_eq!(
            how,
            Wsusscn2Read {
                had_index: true,
                passes: 1
            }
        );
        assert_eq!(taken.xml, b"<OfflineSyncPackage/>");
        assert_eq!(
            taken.events,
            [
                "package end",
                "package2.cab: 1 documents",
                "package3.cab: 1 documents"
            ]
        );
    }

    #[test]
    fn detail_cabinets_before_the_index_or_the_package_take_a_second_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wsusscn2.cab");
        for order in [
            ["package2.cab", INDEX, INNER, "package3.cab", "noise"],
            ["package2.cab", INNER, "package3.cab", INDEX, "noise"],
        ] {
            std::fs::write(&path, wsusscn2(&order)).unwrap();
            let (taken, how) = read(&path).unwrap();
            assert_eq!(how.passes, 2, "{order:?}");
            let mut events = taken.events.clone();
            assert_eq!(events.remove(0), "package end", "{order:?}");
            events.sort();
            assert_eq!(
                events,
                ["package2.cab: 1 documents", "package3.cab: 1 documents"],
                "{order:?}"
            );
        }
        // Named by the index, package first: one pass, whatever else is
        // where.
        std::fs::write(
            &path,
            wsusscn2(&[INNER, INDEX, "noise", "package3.cab", "package2.cab"]),
        )
        .unwrap();
        let (taken, how) = read(&path).unwrap();
        assert_eq!(how.passes, 1);
        assert_eq!(taken.events.len(), 3);
    }
}
