//! Writes a synthetic `package.xml` in the shape of Microsoft's wsusscn2.cab:
//! every fifth update a bundle of the four after it, the others with 2 or 3
//! payload files, every seventh superseded, then all file locations.
//!
//! Usage: `gen_package_xml UPDATES OUT.xml [URL_BASE]`
//! (500,000 updates → 1,000,000 files, about 300 MB).

use std::io::{BufWriter, Write};

use base64::Engine as _;
use sha1::Digest as _;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(n), Some(out)) = (args.get(1).and_then(|n| n.parse::<u64>().ok()), args.get(2))
    else {
        eprintln!("usage: gen_package_xml UPDATES OUT.xml [URL_BASE]");
        std::process::exit(2);
    };
    let base = args
        .get(3)
        .map_or("http://download.windowsupdate.com", String::as_str);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let ns = "http://schemas.microsoft.com/msus/2004/02/OfflineSync";
    writeln!(w, r#"<?xml version="1.0" encoding="utf-8"?>"#)?;
    writeln!(
        w,
        r#"<OfflineSyncPackage xmlns="{ns}" PackageVersion="1.1"><Updates>"#
    )?;
    let mut files = 0u64;
    for i in 0..n {
        let rev = 10_000_000 + i;
        write!(
            w,
            r#"<Update UpdateId="{:08x}-0000-4000-8000-{:012x}" RevisionNumber="200" RevisionId="{rev}" CreationDate="2024-01-09T18:00:00Z" IsLeaf="true"{}>"#,
            i,
            i,
            if i % 5 == 0 {
                r#" IsBundle="true""#
            } else {
                ""
            }
        )?;
        write!(
            w,
            r#"<Categories><Category Type="UpdateClassification" Id="0fa1201d-4330-4fa8-8ae9-b877473b6441"/></Categories>"#
        )?;
        if i % 7 == 0 && i + 1 < n {
            write!(
                w,
                r#"<SupersededBy><Revision Id="{}"/></SupersededBy>"#,
                rev + 1
            )?;
        }
        if i % 5 != 0 {
            w.write_all(b"<PayloadFiles>")?;
            for _ in 0..(2 + i % 2) {
                write!(w, r#"<File Id="{}"/>"#, file_id(files))?;
                files += 1;
            }
            w.write_all(b"</PayloadFiles>")?;
            write!(
                w,
                r#"<BundledBy><Revision Id="{}"/></BundledBy>"#,
                rev - i % 5
            )?;
        }
        w.write_all(b"</Update>\n")?;
    }
    w.write_all(b"</Updates><FileLocations>\n")?;
    for f in 0..files {
        let sha1 = hex::encode(
            base64::engine::general_purpose::STANDARD
                .decode(file_id(f))
                .unwrap(),
        );
        writeln!(
            w,
            r#"<FileLocation Id="{}" Url="{base}/c/msdownload/update/software/secu/2024/01/windows10.0-kb{}-x64_{sha1}.cab"/>"#,
            file_id(f),
            5_000_000 + f / 3
        )?;
    }
    w.write_all(b"</FileLocations></OfflineSyncPackage>\n")?;
    w.flush()?;
    eprintln!("{n} updates, {files} files");
    Ok(())
}

fn file_id(i: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(i.to_le_bytes()))
}
