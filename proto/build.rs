//! Compiles `proto/csi.proto` with protox (a pure-Rust protobuf compiler: no
//! `protoc` on the machine, nothing downloaded) and generates the tonic
//! client and server code from the descriptor set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let fds = protox::compile(["csi.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
