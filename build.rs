//! Rebuilds when a database migration is added: `sqlx::migrate!` embeds the files it saw at
//! compile time, and cargo only notices changes to those, not new files in the folder.
//!
//! Also writes the table of bundled agents and simulator scenarios (`src/bundled.rs` includes
//! it): every `config/agents/*.toml` and `config/scenarios/*.toml`, so that the binary runs
//! from any folder with no files beside it, and a file added to either folder is bundled
//! without editing a list.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=config/agents");
    println!("cargo:rerun-if-changed=config/scenarios");
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    let mut out = String::new();
    for (name, dir) in [
        ("AGENTS", "config/agents"),
        ("SCENARIOS", "config/scenarios"),
    ] {
        out.push_str(&format!("pub(crate) const {name}: &[(&str, &str)] = &[\n"));
        for (stem, path) in toml_files(&root.join(dir)) {
            out.push_str(&format!("    ({stem:?}, include_str!({path:?})),\n"));
        }
        out.push_str("];\n");
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bundled.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}

/// The `*.toml` files of `dir` (not hidden ones), sorted, as (file stem, absolute path).
fn toml_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            let path = p.to_str()?.to_string();
            (!stem.starts_with('.')).then_some((stem, path))
        })
        .collect();
    files.sort();
    files
}
