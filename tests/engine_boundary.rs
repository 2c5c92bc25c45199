//! The engine stays pure: nothing under `src/engine` reaches for a client, a runtime, the
//! routers, the controllers or I/O. The compiler would keep this for a crate of its own;
//! until the engine is one (issue 14), this test keeps it for the module, by reading
//! every file of it.

use std::path::{Path, PathBuf};

/// What the engine may not name: kube's client and runtime, async runtimes and I/O,
/// and the modules above it.
const FORBIDDEN: &[&str] = &[
    "kube::",
    "kube_runtime",
    "tokio",
    "reqwest",
    "hyper",
    "axum",
    "std::fs",
    "std::net",
    "std::process",
    "SystemTime::now",
    "Timestamp::now",
    "crate::routing",
    "crate::controller",
    "crate::analysis",
    "crate::alerts",
    "crate::runtime",
    "crate::writes",
    "crate::metrics",
    "crate::http",
    "crate::cli",
];

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

#[test]
fn the_engine_names_no_client_runtime_io_or_module_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 5, "the engine's files are found: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may use what they like.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or_default();
            for forbidden in FORBIDDEN {
                if line.contains(forbidden) {
                    found.push(format!(
                        "{}:{}: {forbidden}",
                        file.strip_prefix(&root).unwrap().display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the engine must stay pure (decide from observations; the controllers read and write):\n{}",
        found.join("\n")
    );
}
