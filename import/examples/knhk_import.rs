//! Stand-in for the `knhk` binary's import commands until the shell wires them:
//! `cargo run -p knhk-import --example knhk_import -- check FILE...`,
//! `... -- compile FILE`, `... -- replay MODEL LOG`.

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, err) = (&mut std::io::stdout(), &mut std::io::stderr());
    let code = match args.split_first() {
        Some((cmd, rest)) if cmd == "check" => {
            let paths: Vec<PathBuf> = rest.iter().map(PathBuf::from).collect();
            knhk_import::cli::check(&paths, out, err)
        }
        Some((cmd, [file])) if cmd == "compile" => {
            knhk_import::cli::compile(file.as_ref(), out, err)
        }
        Some((cmd, [model, log])) if cmd == "replay" => {
            knhk_import::cli::replay(model.as_ref(), log.as_ref(), out, err)
        }
        _ => {
            eprintln!("usage: knhk_import check FILE... | compile FILE | replay MODEL LOG");
            2
        }
    };
    std::process::exit(code);
}
