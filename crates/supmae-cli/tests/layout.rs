//! The workspace's layout rules, checked on the sources: no source file over 600 lines, no
//! import cycles between the top-level modules of a crate nor between the files of one
//! folder, and a library crate that does not compile the command line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn crates() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

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

fn sources(krate: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&krate.join("src"), &mut files);
    files.sort();
    files
}

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(crates())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 5, "{dirs:?}");
    dirs
}

#[test]
fn no_source_file_is_over_600_lines() {
    let mut long = Vec::new();
    for krate in crate_dirs() {
        for file in sources(&krate) {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            if lines > 600 {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(long.is_empty(), "split these: {long:?}");
}

/// `crate::name` paths of a source file (in `use` lists too).
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let end = list.find('}').unwrap_or(list.len());
            for item in list[..end].split(',') {
                let item = item.trim();
                if item.contains("::") {
                    used.insert(ident(item));
                }
            }
        } else {
            used.insert(ident(rest));
        }
    }
    used.retain(|m| !m.is_empty());
    used
}

/// A cycle of `edges` (depth-first search for a back edge), if there is one; edges to
/// names that are not keys are ignored.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if !edges.contains_key(m) {
                continue;
            }
            match state.get(m) {
                Some(1) => {
                    let start = path.iter().position(|p| p == m).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n)
            && let Some(cycle) = visit(n, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_import_cycles_between_the_modules_of_a_crate() {
    for krate in crate_dirs() {
        let src = krate.join("src");
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in sources(&krate) {
            let rel = file.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            if first == "lib.rs" || first == "main.rs" {
                continue;
            }
            let module = first.trim_end_matches(".rs").to_string();
            let used = used_modules(&std::fs::read_to_string(&file).unwrap());
            edges
                .entry(module.clone())
                .or_default()
                .extend(used.into_iter().filter(|m| *m != module));
        }
        if let Some(cycle) = find_cycle(&edges) {
            panic!("{}: import cycle {}", krate.display(), cycle.join(" -> "));
        }
    }
}

/// `super::name` references in the code (not the comments) of a file to its sibling files
/// in `siblings`.
fn used_siblings(text: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut used = BTreeSet::new();
    for (i, _) in code.match_indices("super::") {
        let rest = &code[i + "super::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(list) => list[..list.find('}').unwrap_or(list.len())]
                .split(',')
                .map(str::trim)
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let ident: String = name
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if siblings.contains(&ident) {
                used.insert(ident);
            }
        }
    }
    used
}

/// No import cycle between the sibling files of any folder of any crate (`a.rs` uses
/// `super::b`, `b.rs` uses `super::a`, or longer): a circle between files is as hard to
/// follow as one between top-level modules.
#[test]
fn no_import_cycles_between_the_files_of_a_module() {
    let mut circles = Vec::new();
    for krate in crate_dirs() {
        let mut folders: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
        for file in sources(&krate) {
            folders
                .entry(file.parent().unwrap().to_path_buf())
                .or_default()
                .push(file);
        }
        for (folder, files) in folders {
            let stem = |f: &Path| f.file_stem().unwrap().to_string_lossy().into_owned();
            let siblings: BTreeSet<String> = files
                .iter()
                .map(|f| stem(f))
                .filter(|s| s != "mod" && s != "lib" && s != "main")
                .collect();
            let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for f in files.iter().filter(|f| siblings.contains(&stem(f))) {
                let text = std::fs::read_to_string(f).unwrap();
                let mut used = used_siblings(&text, &siblings);
                used.remove(&stem(f));
                edges.insert(stem(f), used);
            }
            if let Some(cycle) = find_cycle(&edges) {
                circles.push(format!("{}: {}", folder.display(), cycle.join(" -> ")));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between files: {circles:?}"
    );
}

#[test]
fn the_library_crate_does_not_compile_the_command_line() {
    let manifest = std::fs::read_to_string(crates().join("supmae/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for program_only in ["clap", "mimalloc"] {
        assert!(
            !deps
                .lines()
                .any(|l| l.trim_start().starts_with(program_only)),
            "{program_only} is a dependency of the library crate"
        );
    }
    assert!(!crates().join("supmae/src/cli.rs").exists());
}
