//! The crate's modules depend on each other one way only: the `crate::` paths in `src/*.rs` form
//! an acyclic graph (the layers are listed under "Module layering" in docs/design.md).
//!
//! Each file's code is scanned with its comments, doc comments, string literals and unit-test
//! modules (`#[cfg(test)] mod tests`) blanked out.
//! A path `crate::m` names module `m`; a path `crate::Name` to something `lib.rs` re-exports
//! (`pub use m::Name`) names the module it comes from, so `use crate::EpochMap` counts as a
//! dependency on `map`. `lib.rs` itself is the root, not a node.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// `source` with every comment and string or char literal replaced by spaces (newlines kept).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some(_) => j += 1,
                }
            }
            for &ch in &chars[i..j.min(chars.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c == '"' {
            blank(&mut out, c);
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
            if i < chars.len() {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a), which is kept.
            if next == Some('\\') {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                for &ch in &chars[i..(j + 1).min(chars.len())] {
                    blank(&mut out, ch);
                }
                i = j + 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` (already comment-free) with the bodies of its unit-test modules blanked out: a
/// `mod` under `#[cfg(test)]` or `#[cfg(all(test, ...))]`. Tests may build a whole map to
/// exercise a low module; they are not part of the library the layering is about.
fn without_test_modules(code: &str) -> String {
    let mut out = code.to_string();
    let mut from = 0;
    while let Some(at) = out[from..].find("#[cfg(") {
        let start = from + at;
        from = start + 1;
        let predicate_start = start + "#[cfg(".len();
        let Some(len) = out[predicate_start..].find(")]") else {
            break;
        };
        let predicate: String = out[predicate_start..predicate_start + len]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if predicate != "test" && !predicate.starts_with("all(test,") {
            continue;
        }
        let rest = out[predicate_start + len + 2..].trim_start();
        let rest = rest.strip_prefix("pub(crate)").unwrap_or(rest).trim_start();
        if !rest.starts_with("mod ") {
            continue;
        }
        let Some(open) = out[start..].find('{').map(|i| start + i) else {
            break;
        };
        let mut depth = 0;
        let mut end = out.len();
        for (i, c) in out[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        let blanked: String = out[start..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(start..end, &blanked);
        from = end;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first path segment after each `crate::` in `code`, including each item of a group
/// (`crate::{a::X, b}` gives `a` and `b`).
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        // `$crate::` counts; `my_crate::` does not.
        if before.is_some_and(is_ident) {
            continue;
        }
        let after = after.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && is_ident(c) => {
                        let name: String =
                            group[i..].chars().take_while(|&c| is_ident(c)).collect();
                        found.push(name);
                        item_start = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => item_start = false,
                }
            }
        } else {
            let name: String = after.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// Module names of `src/*.rs` (without `lib`), and what each depends on.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            let source = fs::read_to_string(&path).expect("a source file is readable");
            files.insert(module, without_test_modules(&code_only(&source)));
        }
    }
    let lib = files.remove("lib").expect("src/lib.rs exists");

    // What the root re-exports, and from which module: `pub use m::{A, B}` / `pub use crate::m::A`.
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(at) = stmt.find("pub use ") else {
            continue;
        };
        let path = stmt[at + "pub use ".len()..].trim();
        let path = path.strip_prefix("crate::").unwrap_or(path);
        let Some((module, names)) = path.split_once("::") else {
            continue;
        };
        let names = names.trim().trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.split_whitespace().last().unwrap_or("");
            if !name.is_empty() {
                reexports.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    assert!(
        reexports
            .get("EpochMap")
            .is_some_and(|m| files.contains_key(m)),
        "lib.rs re-exports EpochMap from a module in src/ (found {reexports:?})"
    );

    files
        .iter()
        .map(|(module, code)| {
            let deps = crate_paths(code)
                .into_iter()
                .filter_map(|name| {
                    if files.contains_key(&name) {
                        Some(name)
                    } else {
                        reexports.get(&name).cloned()
                    }
                })
                .filter(|dep| dep != module)
                .collect();
            (module.clone(), deps)
        })
        .collect()
}

/// A cycle in `graph`, as the modules along it with the first repeated at the end.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(node, Mark::OnPath);
        path.push(node);
        for dep in graph.get(node).into_iter().flatten() {
            match marks.get(dep.as_str()).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let from = path.iter().position(|m| *m == dep).unwrap();
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|m| m.to_string()).collect();
                    cycle.push(dep.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(dep, graph, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn module_imports_are_acyclic() {
    let graph = graph();
    assert!(
        graph.len() >= 20 && graph.contains_key("map") && graph.contains_key("shard"),
        "the scan found the crate's modules: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    if let Some(cycle) = find_cycle(&graph) {
        let listing: Vec<String> = graph
            .iter()
            .map(|(m, deps)| {
                format!(
                    "  {m}: {}",
                    deps.iter().cloned().collect::<Vec<_>>().join(" ")
                )
            })
            .collect();
        panic!(
            "module imports form a cycle: {}\n(a lower module must not name a higher one; see \
             \"Module layering\" in docs/design.md)\nthe graph:\n{}",
            cycle.join(" -> "),
            listing.join("\n")
        );
    }
}

#[test]
fn the_scanner_reads_paths_not_comments_or_strings() {
    let code = code_only(
        "use crate::a::X; // crate::b\n/* crate::c /* nested */ crate::d */ let s = \"crate::e\";\n\
         let r = r#\"crate::f\"#; let c = '\"'; use crate::{g::Y, h}; fn f<'a>() -> crate::I {}",
    );
    assert_eq!(crate_paths(&code), ["a", "g", "h", "I"]);
}

#[test]
fn unit_test_modules_are_skipped_and_other_cfgs_are_not() {
    let code = code_only(
        "use crate::a::X;\n#[cfg(all(test, not(loom)))]\nmod tests {\n    use crate::b::Y;\n    \
         fn f() { if true { crate::c::g() } }\n}\n#[cfg(not(test))]\nmod real { use crate::d; }\n\
         #[cfg(test)] fn helper() { crate::e::h() }\nuse crate::f;",
    );
    assert_eq!(
        crate_paths(&without_test_modules(&code)),
        ["a", "d", "e", "f"]
    );
}

#[test]
fn a_cycle_is_found_and_printed_in_order() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("map", &["shard"][..]),
        ("shard", &["table", "drain"][..]),
        ("drain", &["map"][..]),
        ("table", &[][..]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_string(), deps.iter().map(|d| d.to_string()).collect()))
    .collect();
    let cycle = find_cycle(&graph).expect("a cycle");
    assert_eq!(cycle, ["drain", "map", "shard", "drain"]);
}
