//! `crdgen`: prints the CRDs as YAML, or writes one file per CRD into a
//! directory (`--write charts/dmraid-csi/crds`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            for (_, yaml) in dmraid_controller::crds::all() {
                print!("---\n{yaml}");
            }
            ExitCode::SUCCESS
        }
        [flag, dir] if flag == "--write" => {
            for (name, yaml) in dmraid_controller::crds::all() {
                let path = std::path::Path::new(dir).join(name);
                if let Err(e) = std::fs::write(&path, yaml) {
                    eprintln!("crdgen: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("crdgen: wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: crdgen [--write DIR]");
            ExitCode::from(2)
        }
    }
}
