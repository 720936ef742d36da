//! The shape of the code: no two files of a crate import each other,
//! directly or through others, so each can be read (and changed) with only
//! what it imports in mind. The graph is read from `use crate::…`,
//! `use super::…` and inline `crate::…` paths, file by file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["intercept", "create"]`) → its file, for every file
/// under `src`.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut next = prefix.to_vec();
                next.push(name);
                walk(&path, &next, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut module = prefix.to_vec();
                if !matches!(name.as_str(), "mod" | "lib" | "main") {
                    module.push(name);
                }
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The module a path like `relay::state::Call` names: the longest prefix
/// that is a module.
fn resolve(path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|candidate| modules.contains_key(candidate))
}

/// `text` up to its test module: test modules may reach anywhere; they
/// are not part of the shape. (By custom the test module ends the file.)
fn without_tests(text: &str) -> &str {
    let mut at = 0;
    while let Some(found) = text[at..].find("#[cfg(test)]") {
        let start = at + found;
        let after = text[start + "#[cfg(test)]".len()..].trim_start();
        let inline_module = after.starts_with("mod ")
            && after
                .find(['{', ';'])
                .is_some_and(|i| after.as_bytes()[i] == b'{');
        if inline_module {
            return &text[..start];
        }
        at = start + 1;
    }
    text
}

/// The names of the modules `text` declares for tests alone
/// (`#[cfg(test)] mod testing;`): test code, not part of the shape.
fn test_only_children(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("#[cfg(test)]") {
        let after = text[start + "#[cfg(test)]".len()..].trim_start();
        if let Some(rest) = after.strip_prefix("mod ")
            && let Some((name, _)) = rest.split_once(';')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            names.insert(name.to_string());
        }
    }
    names
}

/// Every module path `text` (the source of module `own`) refers to;
/// `children` are the names of `own`'s child modules, which a `use` may
/// name without a prefix.
fn references(text: &str, own: &[String], children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let text = without_tests(text);
    for (start, _) in text.match_indices("use ") {
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = text[start + "use ".len()..].trim_start();
        let first = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if children.contains(first) {
            found.extend(paths_at(rest, own.to_vec()));
        }
    }
    for (start, _) in text.match_indices("crate::") {
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        found.extend(paths_at(&text[start + "crate::".len()..], Vec::new()));
    }
    for (start, _) in text.match_indices("super::") {
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut rest = &text[start..];
        let mut base = own.to_vec();
        while let Some(next) = rest.strip_prefix("super::") {
            base.pop();
            rest = next;
        }
        found.extend(paths_at(rest, base));
    }
    found
}

/// The paths a `use` tree at `rest` names below `base`: `a::b::c` one,
/// `a::{b, c::{d, e}}` each of `a::b`, `a::c::d`, `a::c::e`.
fn paths_at(rest: &str, base: Vec<String>) -> Vec<Vec<String>> {
    let mut base = base;
    let mut rest = rest.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut items = Vec::new();
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        items.push(&group[start..i]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return items
                .into_iter()
                .flat_map(|item| paths_at(item, base.clone()))
                .collect();
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        base.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    vec![base]
}

/// The import graph of a crate's files, each file to the files it uses.
fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut modules = modules(src);
    let test_only: Vec<Vec<String>> = modules
        .iter()
        .flat_map(|(module, file)| {
            let text = std::fs::read_to_string(file).unwrap();
            test_only_children(&text).into_iter().map(|name| {
                let mut child = module.clone();
                child.push(name);
                child
            })
        })
        .collect();
    modules.retain(|module, _| !test_only.iter().any(|t| module.starts_with(t)));
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let children: BTreeSet<String> = modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m[module.len()].clone())
            .collect();
        let edges: BTreeSet<Vec<String>> = references(&text, module, &children)
            .iter()
            .filter_map(|path| resolve(path, &modules))
            .filter(|target| target != module)
            .collect();
        graph.insert(module.clone(), edges);
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut names: Vec<String> = stack[at..].iter().map(|m| m.join("::")).collect();
            names.push(node.join("::"));
            return Some(names);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, stack, done) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn no_two_files_import_each_other() {
    for krate in ["cri-proxy", "shim", "node", "policy", "registry", "sync"] {
        let graph = graph(&workspace().join(krate).join("src"));
        assert!(graph.len() > 3, "{krate}: the crate's files were found");
        if let Some(cycle) = cycle(&graph) {
            panic!("{krate}: files import each other: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_checker_finds_a_cycle_where_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a; mod b;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "use crate::b::Thing;\n").unwrap();
    std::fs::write(src.join("a/inner.rs"), "use super::Other;\n").unwrap();
    std::fs::write(src.join("b.rs"), "fn f() {}\n").unwrap();
    assert_eq!(cycle(&graph(src)), None, "a::inner → a → b is no loop");
    std::fs::write(src.join("b.rs"), "fn f() { crate::a::inner::g() }\n").unwrap();
    assert!(cycle(&graph(src)).is_some(), "a::inner → a → b → a::inner");
    std::fs::write(src.join("a/inner.rs"), "").unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "use crate::{c, b::{Thing, more::Stuff}};\n",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "use crate::a::X;\n").unwrap();
    assert!(cycle(&graph(src)).is_some(), "a ↔ b");
}

#[test]
fn the_checker_sees_a_parent_and_a_child_importing_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod inner;\npub use inner::Thing;\n").unwrap();
    std::fs::write(src.join("a/inner.rs"), "pub struct Thing;\n").unwrap();
    assert_eq!(cycle(&graph(src)), None, "a → a::inner is no loop");
    std::fs::write(src.join("a/inner.rs"), "use super::Other;\n").unwrap();
    assert!(cycle(&graph(src)).is_some(), "a ↔ a::inner");
}

/// The proxy's modules the relay may not name: everything but itself.
#[test]
fn the_relay_knows_nothing_of_the_proxy_around_it() {
    let src = workspace().join("cri-proxy").join("src");
    let graph = graph(&src);
    let relay = vec!["relay".to_string()];
    let mut files = 0;
    for (module, edges) in &graph {
        if !module.starts_with(&relay) {
            continue;
        }
        files += 1;
        for target in edges {
            assert!(
                target.starts_with(&relay),
                "{} uses {}: the relay must know nothing of the CRI or of policy",
                module.join("::"),
                target.join("::")
            );
        }
        let text = std::fs::read_to_string(modules(&src)[module].clone()).unwrap();
        let text = without_tests(&text);
        for name in [
            "attestgate_policy",
            "attestgate_node",
            "k8s_cri",
            "prometheus_client",
        ] {
            assert!(
                !text.contains(name),
                "{} names {name}: the relay must know nothing of the CRI or of policy",
                module.join("::")
            );
        }
    }
    assert!(files >= 8, "the relay's files were found ({files})");
}
