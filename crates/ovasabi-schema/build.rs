//! Compiles the repository's `schemas/` directory into the crate: every `.json` file under
//! it (JSON Schemas) and every `.proto` file (their Protobuf encodings) becomes an entry of
//! `BUILTIN` (its path relative to `schemas/`, and its text).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, root, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "json" || e == "proto")
        {
            let relative = path
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((relative, path));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../../schemas");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut code = String::from("/// The schemas compiled in: (path under `schemas/`, text).\n");
    code.push_str("pub(crate) const BUILTIN: &[(&str, &str)] = &[\n");
    for (relative, path) in &files {
        let absolute = path.canonicalize().expect("a file that exists");
        let _ = writeln!(
            code,
            "    ({relative:?}, include_str!({:?})),",
            absolute.display().to_string()
        );
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("builtin.rs");
    std::fs::write(out, code).expect("write builtin.rs");
}
