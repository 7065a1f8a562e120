const PROTOS: [&str; 5] = [
    "../../proto/aggregator.proto",
    "../../proto/encoder.proto",
    "../../proto/profile.proto",
    "../../proto/sharder.proto",
    "../../proto/traffic.proto",
];

fn main() {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::compile_protos(&PROTOS, &["../../proto"])
        .expect("compile proto/*.proto (is protoc installed? apt-get install protobuf-compiler)");
}
