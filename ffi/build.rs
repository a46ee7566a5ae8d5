//! Compiles libknhk from `../c` (the sources listed in `c/sources.txt`, as c/Makefile does) with
//! `cc` and links it statically, so `cargo build` and `cargo test` work on a fresh clone with no
//! make step. No `-march=native`: the library is portable C11. Publishes the header directory as
//! `DEP_KNHK_INCLUDE` to dependents.
use std::env;
use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let c_dir = manifest.join("../c");
    let include = c_dir.join("include");
    // The one list of sources, shared with c/Makefile: a path relative to c/ per line, sorted;
    // blank lines and lines starting with '#' are skipped.
    let list = c_dir.join("sources.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    let text =
        std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("read {}: {e}", list.display()));
    let sources: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!sources.is_empty(), "{} lists no sources", list.display());
    let mut build = cc::Build::new();
    build
        .include(&include)
        .include(c_dir.join("src"))
        .std("c11")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .opt_level(2)
        // cc keeps frame pointers whenever debug info is on (the bench profile has it): two
        // more instructions and a saved register in every call of the hot path. Off, as in
        // c/Makefile; the debug info stays.
        .force_frame_pointer(false)
        // As c/Makefile: only the KNHK_EXPORT API is visible should this archive end up in a
        // shared object (a cdylib); knhk_internal.h marks the internal functions hidden anyway.
        .flag_if_supported("-fvisibility=hidden");
    // Intel's JCC erratum microcode slows a jump that crosses or ends on a 32-byte boundary;
    // where the assembler can pad around them (binutils >= 2.34, clang), let it, so that the
    // hot path's speed does not depend on where the linker happens to place it.
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        build.flag_if_supported("-Wa,-mbranches-within-32B-boundaries");
    }
    for src in sources {
        let path = c_dir.join(src);
        println!("cargo:rerun-if-changed={}", path.display());
        build.file(path);
    }
    println!(
        "cargo:rerun-if-changed={}",
        c_dir.join("src/knhk_internal.h").display()
    );
    for header in ["knhk.h", "knhk/version.h"] {
        println!("cargo:rerun-if-changed={}", include.join(header).display());
    }
    build.compile("knhk"); // emits cargo:rustc-link-lib=static=knhk and the search path

    // Layout probe: C's own sizeof/_Alignof/offsetof of every public struct, for the test that
    // pins the Rust bindings against the C compiler (not against bindgen's view of it).
    let probe = manifest.join("tests/layout_probe.c");
    println!("cargo:rerun-if-changed={}", probe.display());
    cc::Build::new()
        .include(&include)
        .std("c11")
        .warnings_into_errors(true)
        .file(probe)
        .compile("knhk_layout_probe");

    println!("cargo:include={}", include.display());
    for var in ["CC", "CFLAGS", "TARGET"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    #[cfg(feature = "regenerate")]
    regenerate(&include);
}

#[cfg(feature = "regenerate")]
fn regenerate(include: &std::path::Path) {
    let header = include.join("knhk.h");
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .use_core()
        .allowlist_function("knhk_.*")
        .allowlist_type("knhk_.*")
        .allowlist_var("KNHK_.*")
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen failed on c/include/knhk.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .expect("write generated bindings");
}
