//! prost messages shared by every coldstart service: Flight tickets (`Ticket`) and DoPut commands
//! (`PutCommand`), generated from `proto/coldstart.proto`. Rows never travel in these messages; they
//! travel as Arrow record batches beside them.
#![allow(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/coldstart.v1.rs"));
