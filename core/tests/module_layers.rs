//! Regression (issue 16): `call` and `policy` imported each other, and so did
//! `engine`, `ingress` and `registrar`, against the rule in `core/src/lib.rs`
//! that layers only look down. This test reads the sources of every top-level
//! module of `core/src` (production code: `#[cfg(test)]` modules and test
//! files left out), collects the `crate::<module>` paths each one names, and
//! fails on any cycle, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "tests" {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
}

/// The production part of a source file: up to its `#[cfg(test)]` module.
fn production(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// Every `crate::name` the text mentions.
fn mentioned(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .filter(|(i, _)| !text[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&root).expect("core/src").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let (module, files) = if path.is_dir() {
            let mut files = Vec::new();
            sources(&path, &mut files);
            (name, files)
        } else if let Some(stem) = name.strip_suffix(".rs")
            && stem != "lib"
            && stem != "main"
        {
            (stem.to_string(), vec![path])
        } else {
            continue;
        };
        let mut uses = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source");
            uses.extend(mentioned(production(&text)));
        }
        modules.insert(module, uses);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .into_iter()
        .map(|(m, uses)| {
            let uses = uses
                .into_iter()
                .filter(|u| *u != m && names.contains(u))
                .collect();
            (m, uses)
        })
        .collect()
}

/// A cycle through `from`, if there is one, as the path that closes it.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    at: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in graph.get(at).into_iter().flatten() {
        if next == from {
            let mut cycle = path.clone();
            cycle.push(from.to_string());
            return Some(cycle);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(c) = cycle_from(graph, from, next, path, seen) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_module_of_core_imports_one_that_imports_it_back() {
    let graph = graph();
    assert!(graph.len() > 10, "read the modules: {graph:?}");
    assert!(
        graph["engine"].contains("call"),
        "the reader sees imports: {graph:?}"
    );
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(cycle) = cycle_from(&graph, module, module, &mut path, &mut BTreeSet::new()) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_finds_a_cycle_when_there_is_one() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    let mut path = vec!["a".to_string()];
    let cycle = cycle_from(&graph, "a", "a", &mut path, &mut BTreeSet::new());
    assert_eq!(
        cycle.map(|c| c.join(" -> ")),
        Some("a -> b -> c -> a".into())
    );
    assert_eq!(
        mentioned("use crate::sip::X; let y = crate::call::Z; my_crate::nope"),
        BTreeSet::from(["call".to_string(), "sip".to_string()])
    );
}
