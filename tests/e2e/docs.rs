//! The documentation's relative links lead somewhere: README.md,
//! ARCHITECTURE.md, benches/README.md and every docs/*.md. Moving or
//! renaming a page (or a file a page points at) fails here, naming each
//! broken link.

use std::path::{Path, PathBuf};

/// The pages whose links are checked, relative to the repository.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "benches/README.md"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    let docs = std::fs::read_dir(root.join("docs")).expect("reading docs/");
    let mut in_docs: Vec<PathBuf> = docs
        .map(|entry| entry.expect("reading docs/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    in_docs.sort();
    pages.extend(in_docs);
    pages
}

/// `line` without its inline code spans (`` `[a](b)` `` is not a link).
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The targets of the markdown links on one line: inline `[text](target)`
/// (a title after the target, or `<target>`, allowed) and reference
/// definitions `[label]: target`.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix('[') {
        if let Some((_, def)) = rest.split_once("]:") {
            targets.extend(target_of(def));
        }
    }
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        targets.extend(target_of(&rest[..end]));
        rest = &rest[end..];
    }
    targets
}

/// The destination at the start of `s`: `<with spaces>` or up to a space
/// (a title may follow).
fn target_of(s: &str) -> Option<String> {
    let s = s.trim_start();
    match s.strip_prefix('<') {
        Some(inner) => inner.split_once('>').map(|(t, _)| t.to_owned()),
        None => s.split_whitespace().next().map(str::to_owned),
    }
}

/// Whether a link target points outside the repository (or is no path).
fn external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// Every broken relative link of `page`, as `page:line: target`.
fn broken_links(root: &Path, page: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(page).unwrap_or_else(|e| panic!("reading {}: {e}", page.display()));
    let dir = page.parent().expect("a page is in a directory");
    let shown = page
        .strip_prefix(root)
        .unwrap_or(page)
        .display()
        .to_string();
    let mut broken = Vec::new();
    let mut in_fence = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        for target in link_targets(&without_code_spans(line)) {
            if external(&target) {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() {
                continue; // an anchor in the same page
            }
            if !dir.join(path).exists() {
                broken.push(format!("{shown}:{}: {target}", n + 1));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pages = pages(root);
    assert!(
        pages.len() > 3,
        "docs/ holds no .md page: {}",
        root.join("docs").display()
    );
    let broken: Vec<String> = pages
        .iter()
        .flat_map(|page| broken_links(root, page))
        .collect();
    assert!(
        broken.is_empty(),
        "{} broken relative link(s) in the documentation:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn links_are_found_where_markdown_has_them() {
    let line = "see [a](docs/a.md#x), [b](<b c.md> \"title\") and [web](https://x.org)";
    assert_eq!(
        link_targets(line),
        ["docs/a.md#x", "b c.md", "https://x.org"]
    );
    assert_eq!(
        link_targets("[ref]: ../benches/README.md"),
        ["../benches/README.md"]
    );
    assert!(link_targets(&without_code_spans("`[not](a link)` here")).is_empty());
    assert!(external("HTTPS://example.org") && !external("docs/http.md"));
}
