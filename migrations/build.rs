//! Embeds this folder's golang-migrate files (`NNNNNN_name.up.sql` / `.down.sql`) into the crate,
//! so `api-service migrate` and `AUTO_MIGRATE=true` work from a container image that ships only
//! the executable.

use std::{env, fs, path::PathBuf};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<(u64, String, PathBuf, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&dir).expect("migrations folder") {
        let path = entry.expect("dir entry").path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        println!("cargo:rerun-if-changed={}", path.display());
        let Some(stem) = file.strip_suffix(".up.sql") else {
            continue;
        };
        let (version, name) = stem.split_once('_').expect("NNNNNN_name.up.sql");
        let version: u64 = version.parse().expect("numeric migration version");
        let down = dir.join(format!("{stem}.down.sql"));
        assert!(down.exists(), "{file} has no .down.sql");
        entries.push((version, name.to_owned(), path, down));
    }
    entries.sort_by_key(|e| e.0);
    let mut out = String::from(
        "/// Every migration of `migrations/`, in version order.\npub static MIGRATIONS: &[Migration] = &[\n",
    );
    for (version, name, up, down) in entries {
        out.push_str(&format!(
            "    Migration {{ version: {version}, name: {name:?}, up: include_str!({up:?}), down: include_str!({down:?}) }},\n",
            up = up.canonicalize().unwrap(),
            down = down.canonicalize().unwrap(),
        ));
    }
    out.push_str("];\n");
    fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("migrations.rs"),
        out,
    )
    .unwrap();
}
