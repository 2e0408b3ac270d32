//! Microsoft ships its catalog as cabinets: `wsusscn2.cab` holds
//! `package.cab`, which holds `package.xml` (LZX-compressed; the `cab`
//! crate decodes it). The XML is handed on in chunks, never whole.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

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
    let mut scratch = scratch_file()?;
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

/// A temp file that disappears when closed.
fn scratch_file() -> io::Result<File> {
    let path = std::env::temp_dir().join(format!(
        "upcache-package-{}-{:?}.cab",
        std::process::id(),
        std::thread::current().id()
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
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
