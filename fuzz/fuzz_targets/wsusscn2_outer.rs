//! `wsusscn2.cab` read whole, the outer cabinet and the cabinets inside
//! it (`catalog::cabinet::read_wsusscn2`): never panics on any bytes;
//! `package.xml` is handed on before its end and never after, and each
//! detail cabinet's lines end with the count of the documents read.
#![no_main]

use std::fs::File;
use std::io::{self, Read, Seek};

use libfuzzer_sys::fuzz_target;
use upcache::catalog::cabinet::{read_wsusscn2, DetailRead, Wsusscn2Sink};

#[derive(Default)]
struct Checked {
    ended: bool,
}

impl Wsusscn2Sink for Checked {
    fn package_xml(&mut self, _chunk: &[u8]) -> io::Result<()> {
        assert!(!self.ended, "package.xml after its end");
        Ok(())
    }

    fn package_end(&mut self) -> io::Result<()> {
        self.ended = true;
        Ok(())
    }

    fn documents(&mut self, _cabinet: &str, mut lines: File, read: DetailRead) -> io::Result<()> {
        let mut text = String::new();
        lines.rewind()?;
        lines.read_to_string(&mut text)?;
        let end = format!("{{\"end\":{}}}", read.documents);
        assert_eq!(text.lines().last(), Some(end.as_str()));
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    // One file per fuzzing process: `read_wsusscn2` reads a path.
    let path = std::env::temp_dir().join(format!("upcache-fuzz-{}.cab", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = read_wsusscn2(&path, &["en".to_owned()], &mut Checked::default());
});
