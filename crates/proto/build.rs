fn main() {
    println!("cargo:rerun-if-changed=../../proto/coldstart.proto");
    prost_build::compile_protos(&["../../proto/coldstart.proto"], &["../../proto"]).expect(
        "compile proto/coldstart.proto (is protoc installed? apt-get install protobuf-compiler)",
    );
}
