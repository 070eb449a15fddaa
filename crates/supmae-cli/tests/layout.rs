//! The workspace's layout rules, checked on the sources: no source file over 600 lines, no
//! import cycles between the top-level modules of a crate nor between the files of one
//! folder, no file that is a `use super::*` fragment of its parent (each rule also finds
//! a planted violation), a library crate that does not compile the command line, a facade
//! of about sixty public items, and README pictures that work on crates.io.

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

/// The line cap of a source file.
const MAX_LINES: usize = 600;

/// `file (N lines)` when `text` is over [`MAX_LINES`].
fn over_cap(file: &Path, text: &str) -> Option<String> {
    let lines = text.lines().count();
    (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", file.display()))
}

#[test]
fn no_source_file_is_over_600_lines() {
    let mut long = Vec::new();
    for krate in crate_dirs() {
        for file in sources(&krate) {
            long.extend(over_cap(&file, &std::fs::read_to_string(&file).unwrap()));
        }
    }
    assert!(long.is_empty(), "split these: {long:?}");
}

#[test]
fn a_planted_long_file_is_found() {
    let at_cap = "// line\n".repeat(MAX_LINES);
    assert_eq!(over_cap(Path::new("ok.rs"), &at_cap), None);
    assert_eq!(
        over_cap(
            Path::new("long.rs"),
            &format!("{at_cap}fn one_more() {{}}\n")
        ),
        Some(format!("long.rs ({} lines)", MAX_LINES + 1))
    );
}

/// `crate::name` paths in the code (not the comments: doc links are no imports) of a source
/// file, in `use` lists too.
fn used_modules(text: &str) -> BTreeSet<String> {
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.as_str();
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
fn a_planted_file_circle_is_found() {
    let siblings: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let files = [
        ("a", "use super::b::Thing;\n"),
        (
            "b",
            "use super::{c::Other, d};\n// super::a in a comment does not count\n",
        ),
        ("c", "fn f() { super::a::g() }\n"),
    ];
    let mut edges: BTreeMap<String, BTreeSet<String>> = files
        .iter()
        .map(|(name, text)| (name.to_string(), used_siblings(text, &siblings)))
        .collect();
    let cycle = find_cycle(&edges).expect("the planted circle");
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    assert_eq!(cycle.first(), cycle.last());
    // Cut one edge and the circle is gone.
    edges.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&edges), None);
}

/// Files whose lines are `use super::*;` at the top level: fragments of their parent cut
/// out to fit the line cap rather than modules with their own imports (inline test modules,
/// indented, may glob their parent).
fn glob_fragments(file: &Path, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim_end() == "use super::*;")
        .map(|(i, _)| format!("{}:{}", file.display(), i + 1))
        .collect()
}

#[test]
fn no_source_file_is_a_fragment_of_its_parent() {
    let mut fragments = Vec::new();
    for krate in crate_dirs() {
        for file in sources(&krate) {
            let text = std::fs::read_to_string(&file).unwrap();
            fragments.extend(glob_fragments(&file, &text));
        }
    }
    assert!(
        fragments.is_empty(),
        "import what these files use instead of `use super::*`: {fragments:?}"
    );
}

#[test]
fn a_planted_fragment_is_found() {
    let text = "//! A part.\n\nuse super::*;\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n";
    assert_eq!(
        glob_fragments(Path::new("part.rs"), text),
        vec!["part.rs:3".to_string()]
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

/// The README is the `supmae` and `supmae-cli` crates' page on crates.io and docs.rs, where
/// relative links do not resolve: every picture is an absolute link into the workspace's
/// `repository` (raw files of its main branch) and names a file that exists here.
#[test]
fn readme_pictures_are_absolute_links_to_files_of_the_repository() {
    let root = crates().join("..");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let repository = manifest
        .lines()
        .find_map(|l| l.strip_prefix("repository = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a repository in [workspace.package]");
    let slug = repository
        .strip_prefix("https://github.com/")
        .expect("a GitHub repository URL");
    let base = format!("https://raw.githubusercontent.com/{slug}/main/");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut pictures = 0;
    for (i, _) in readme.match_indices("![") {
        let rest = &readme[i..];
        let open = rest.find("](").expect("a picture link") + 2;
        let url = &rest[open..open + rest[open..].find(')').expect("a closed link")];
        let file = url
            .strip_prefix(&base)
            .unwrap_or_else(|| panic!("README picture {url} is not under {base}"));
        assert!(
            root.join(file).is_file(),
            "README picture {url}: no {file} here"
        );
        pictures += 1;
    }
    assert!(pictures >= 2, "the README's pictures went missing");
}

/// The names a `pub use` statement of `text` makes public (`a::b::{C, d::E}` gives `C`,
/// `E`; `x as y` gives `y`), and those of `pub mod`, `pub fn`, `pub struct`, ... items.
fn public_names(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = Vec::new();
    for (i, _) in code.match_indices("pub ") {
        if i > 0 && !code[..i].ends_with(char::is_whitespace) {
            continue;
        }
        let rest = &code[i + 4..];
        if let Some(list) = rest.strip_prefix("use ") {
            let statement = &list[..list.find(';').unwrap_or(list.len())];
            let tail = match (statement.find('{'), statement.rfind('}')) {
                (Some(open), Some(close)) => &statement[open + 1..close],
                _ => statement,
            };
            for item in tail.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let name = item.rsplit(" as ").next().unwrap_or(item);
                names.push(name.rsplit("::").next().unwrap_or(name).trim().to_string());
            }
        } else {
            for kind in [
                "mod ", "fn ", "struct ", "enum ", "trait ", "type ", "const ",
            ] {
                if let Some(item) = rest.strip_prefix(kind) {
                    let name: String = item
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    names.push(name);
                }
            }
        }
    }
    names
}

/// The `supmae` crate's public face stays small: every public item is named in its
/// `lib.rs` (the other modules are private), about sixty in all.
#[test]
fn the_facade_shows_about_sixty_items() {
    let src = crates().join("supmae/src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let names = public_names(&lib);
    assert!(
        (30..=64).contains(&names.len()),
        "{} public items in the facade: {names:?}",
        names.len()
    );
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "an item by two paths: {names:?}");
    for file in sources(&crates().join("supmae")) {
        let text = std::fs::read_to_string(&file).unwrap();
        if file.ends_with("lib.rs") {
            continue;
        }
        let public_mods: Vec<String> = public_names(&text)
            .into_iter()
            .filter(|n| text.contains(&format!("pub mod {n}")))
            .collect();
        assert!(
            public_mods.is_empty(),
            "{}: public modules {public_mods:?}",
            file.display()
        );
    }
    assert!(
        !lib.lines()
            .any(|l| l.starts_with("pub mod ") && l.ends_with(';')),
        "a file module of the facade is public: keep modules private and re-export"
    );
}

#[test]
fn a_planted_public_list_is_counted() {
    let text = "//! pub use not::This;\npub use a::{B, c::D as E};\npub mod m {\n    pub use x::Y;\n}\npub fn f() {}\nmod private;\n";
    assert_eq!(public_names(text), ["B", "E", "m", "Y", "f"]);
}
