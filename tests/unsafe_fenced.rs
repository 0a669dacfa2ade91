//! `unsafe` lives in `src/sys/` only (the crate cannot deny the
//! `unsafe_code` lint: it also flags the `#[link_section]` that keeps a
//! fork child's code together). This test reads every source file of the
//! library and the binaries and fails on an `unsafe` block, fn, impl or
//! trait outside `src/sys/`, and on a block inside it without a
//! `// SAFETY:` comment just above (clippy's `undocumented_unsafe_blocks`
//! checks the same at build time; this also covers code clippy skips).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines with `unsafe` used as a keyword (not in a comment, not as part of
/// a word such as `is_unsafe`, not in a string).
fn unsafe_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or("");
            let code = strip_strings(code);
            code.match_indices("unsafe").any(|(i, _)| {
                let before = code[..i].chars().next_back();
                let after = code[i + 6..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            })
        })
        .map(|(i, l)| (i + 1, l))
        .collect()
}

fn strip_strings(code: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut prev = ' ';
    for c in code.chars() {
        if c == '"' && prev != '\\' {
            in_str = !in_str;
        } else if !in_str {
            out.push(c);
        }
        prev = c;
    }
    out
}

#[test]
fn unsafe_code_appears_only_in_src_sys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("bin"), &mut files);
    let sys = root.join("src/sys");
    let mut outside = Vec::new();
    let mut checked_sys = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let hits = unsafe_lines(&text);
        if f.starts_with(&sys) {
            checked_sys += hits.len();
            continue;
        }
        for (n, line) in hits {
            outside.push(format!("{}:{n}: {}", f.display(), line.trim()));
        }
    }
    assert!(
        outside.is_empty(),
        "unsafe outside src/sys/:\n{}",
        outside.join("\n")
    );
    assert!(checked_sys > 0, "the scan found no unsafe even in src/sys/");
}

#[test]
fn every_unsafe_block_in_sys_carries_a_safety_comment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/sys"), &mut files);
    let mut missing = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in unsafe_lines(&text) {
            let code = line.trim_start();
            // Declarations carry `# Safety` docs (checked by clippy's
            // missing_safety_doc); blocks need the comment.
            if code.starts_with("pub")
                && (code.contains("unsafe fn") || code.contains("unsafe trait"))
            {
                continue;
            }
            let above = lines[..n - 1]
                .iter()
                .rev()
                .take_while(|l| l.trim_start().starts_with("//") || l.trim().is_empty())
                .any(|l| l.contains("SAFETY:"));
            let macro_arm = line.contains("$fn"); // syscall!'s body, commented in the macro
            if !above && !macro_arm && !line.contains("SAFETY:") {
                missing.push(format!("{}:{n}: {}", f.display(), line.trim()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "unsafe without a SAFETY comment above:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_scan_sees_keywords_and_skips_words_comments_and_strings() {
    let text = "let x = unsafe { f() };\nfn is_unsafe() {}\n// unsafe here\nlet s = \"unsafe\";\nunsafe impl Send for X {}\n";
    let lines: Vec<usize> = unsafe_lines(text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(lines, vec![1, 5]);
}
