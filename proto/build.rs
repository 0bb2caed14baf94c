//! Compiles `proto/csi.proto` (and the kubelet's plugin registration API,
//! `proto/pluginregistration.proto`) with protox (a pure-Rust protobuf compiler: no
//! `protoc` on the machine, nothing downloaded) and generates the tonic
//! client and server code from the descriptor set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    println!("cargo:rerun-if-changed=proto/pluginregistration.proto");
    let fds = protox::compile(["csi.proto", "pluginregistration.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
