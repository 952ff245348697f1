//! Generates the tonic/prost code for drover's three gRPC packages with a vendored
//! protoc, so building drover needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of set_var: build scripts are single-threaded.
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("drover_descriptor.bin"))
        .compile_protos(
            &[
                "proto/drover/v1/drover.proto",
                "proto/drover/agent/v1/agent.proto",
                "proto/drover/raft/v1/raft.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
