// Copies the generated Wasmtime C headers (conf.h is generated per feature set) to a stable
// path next to the archive: <target>/<profile>/include.
use std::{env, fs, path::Path};

fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), &to).unwrap();
        }
    }
}

fn main() {
    let inc = env::var("DEP_WASMTIME_C_API_INCLUDE").expect("wasmtime-c-api-impl exports its include dir");
    let out = env::var("OUT_DIR").unwrap();
    let dst = Path::new(&out).join("../../../include");
    copy_tree(Path::new(&inc), &dst);
    println!("cargo:rerun-if-changed=build.rs");
}
