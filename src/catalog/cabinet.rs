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

use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::scancab::{self, DetailCabinet, Part};

const XML: &str = "package.xml";
const INNER: &str = "package.cab";

/// Reads `package.xml` out of `wsusscn2.cab` or `package.cab` at `path`,
/// passing it to `each_chunk` piece by piece.
pub fn read_package_xml(
    path: &Path,
    each_chunk: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut outer = cab::Cabinet::new(File::open(path)?)?;
    if outer.get_file_entry(XML).is_some() {
        return pump(outer.read_file(XML)?, each_chunk);
    }
    if outer.get_file_entry(INNER).is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds neither {XML} nor {INNER}", path.display()),
        ));
    }
    // The inner cabinet needs Seek: spill it to an unlinked temp file.
    let mut scratch = crate::store::scratch_file()?;
    io::copy(&mut outer.read_file(INNER)?, &mut scratch)?;
    scratch.seek(SeekFrom::Start(0))?;
    let mut inner = cab::Cabinet::new(scratch)?;
    pump(inner.read_file(XML)?, each_chunk)
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

/// Streams every member of the cabinet in `file`, each folder
/// decompressed once, handing each member's name and bytes to `each` in
/// folder order (what `each` leaves unread is skipped).
pub fn for_each_member(
    mut file: File,
    each: &mut dyn FnMut(&str, &mut dyn Read) -> io::Result<()>,
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
        let mut stream = cabinet.read_file(&f.to_string())?;
        let mut in_folder: Vec<&Member> = members.iter().filter(|m| m.folder == f).collect();
        in_folder.sort_by_key(|m| m.offset);
        let mut at = 0u64;
        for m in in_folder {
            if m.offset < at {
                return Err(bad(format!("{} overlaps the member before it", m.name)));
            }
            io::copy(&mut (&mut stream).take(m.offset - at), &mut io::sink())?;
            let mut member = (&mut stream).take(m.size);
            each(&m.name, &mut member)?;
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

/// Reads `wsusscn2.cab`'s `index.xml`; `None` when it has none (a bare
/// `package.cab`, or a cabinet holding `package.xml` only).
pub fn read_index(path: &Path) -> io::Result<Option<Vec<DetailCabinet>>> {
    let mut outer = cab::Cabinet::new(File::open(path)?)?;
    let Some(name) = outer
        .folder_entries()
        .flat_map(|f| f.file_entries())
        .map(|f| f.name().to_owned())
        .find(|n| n.eq_ignore_ascii_case("index.xml"))
    else {
        return Ok(None);
    };
    let mut xml = Vec::new();
    outer
        .read_file(&name)?
        .take(scancab::MAX_INDEX as u64 + 1)
        .read_to_end(&mut xml)?;
    scancab::parse_index(&xml)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Streams `wsusscn2.cab` once and, for each detail cabinet in `details`,
/// spools its fragments (core, extended, and localized in `languages`) to
/// a scratch database keyed by revision id, assembles each revision's
/// document, and hands `each` the cabinet's name, a temp file of
/// documents (one JSON line `{"rid": n, "doc": "..."}` each, then
/// `{"end": count}`) and what was read. Scratch and temp files are gone
/// once `each` returns.
pub fn read_details(
    path: &Path,
    details: &[DetailCabinet],
    languages: &[String],
    each: &mut dyn FnMut(&str, File, DetailRead) -> io::Result<()>,
) -> io::Result<()> {
    for_each_member(File::open(path)?, &mut |name, member| {
        let Some(detail) = details.iter().find(|d| d.name.eq_ignore_ascii_case(name)) else {
            return Ok(());
        };
        let mut spilled = crate::store::scratch_file()?;
        io::copy(member, &mut spilled)?;
        let (lines, read) = documents_of(spilled, languages)?;
        each(&detail.name, lines, read)
    })
}

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

/// One detail cabinet's documents, as the lines [`read_details`] gives.
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
        for_each_member(cabinet, &mut |name, member| {
            let Some((rid, part)) = scancab::member(name) else {
                return Ok(());
            };
            if let Part::Localized(lang) = &part {
                if !scancab::wanted_language(lang, languages) {
                    return Ok(());
                }
            }
            let mut body = Vec::new();
            member.take(MAX_FRAGMENT + 1).read_to_end(&mut body)?;
            if body.len() as u64 > MAX_FRAGMENT {
                read.skipped
                    .push((rid, format!("{name} is larger than {MAX_FRAGMENT} bytes")));
                return Ok(());
            }
            let (kind, lang) = part.key();
            insert
                .execute(rusqlite::params![rid as i64, kind, lang, body])
                .map_err(db)?;
            read.fragments += 1;
            Ok(())
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
        for_each_member(File::open(&path).unwrap(), &mut |name, r| {
            let mut b = Vec::new();
            if name != "c\\2" {
                r.read_to_end(&mut b)?;
            }
            got.push((name.to_owned(), b));
            Ok(())
        })
        .unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["c\\1", "x\\1", "l\\en\\1", "c\\2"]);
        assert_eq!(got[0].1, b"one");
        assert!(got[1].1 == big);
        std::fs::write(&path, b"MSCF but not a cabinet").unwrap();
        assert!(for_each_member(File::open(&path).unwrap(), &mut |_, _| Ok(())).is_err());
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

    #[test]
    fn reads_package_xml_through_both_cabinets() {
        let xml = b"<OfflineSyncPackage/>".repeat(50_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wsusscn2.cab");
        std::fs::write(&path, cabinet(INNER, &cabinet(XML, &xml))).unwrap();
        let mut got = Vec::new();
        read_package_xml(&path, &mut |c| {
            got.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert!(got == xml);
        std::fs::write(&path, cabinet("other.txt", b"x")).unwrap();
        assert!(read_package_xml(&path, &mut |_| Ok(())).is_err());
    }
}
