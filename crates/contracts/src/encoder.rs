//! The content encoder's contract: it takes published `items` (validate, encode, file in the
//! nearest cluster on the sharders, register with traffic). It serves no reads.

mod rows;

pub use rows::*;

/// The encoder's wire messages, generated from `proto/encoder.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/coldstart.encoder.v1.rs"));
}

use coldstart_runtime::cluster::Cluster;
use coldstart_runtime::discovery::Role;
use coldstart_runtime::flight::{FlightMessage, Protocol};
use coldstart_runtime::ServiceResult;
use proto::{encoder_command, EncoderCommand, PublishItems};
use std::sync::Arc;

/// The encoder's Flight protocol.
pub struct EncoderProtocol;

impl Protocol for EncoderProtocol {
    const SERVICE: &'static str = "encoder";
    /// The encoder serves no DoGet: every ticket is refused.
    type Ticket = proto::EncoderTicket;
    type Command = EncoderCommand;
}

crate::flight_kinds!(EncoderCommand, encoder_command { PublishItems => "publish_items" });

impl FlightMessage for proto::EncoderTicket {
    fn kind_name(&self) -> Option<&'static str> {
        None
    }
}

/// Calls the encoders: any serving one (they are stateless).
#[derive(Clone)]
pub struct EncoderClient {
    cluster: Arc<Cluster>,
}

impl EncoderClient {
    /// A client routing by `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    /// Publishes checked items through one encoder; `image_dim` is the configured image vector
    /// length. Returns the items accepted.
    pub async fn publish(&self, items: &[Item], image_dim: usize) -> ServiceResult<u64> {
        let encoder = self.cluster.any(Role::Encoder).await?;
        let cmd = EncoderCommand {
            kind: Some(encoder_command::Kind::PublishItems(PublishItems {})),
        };
        self.cluster
            .pool
            .put::<EncoderProtocol>(
                &encoder.flight_addr,
                &cmd,
                vec![Item::to_batch(items, image_dim)],
            )
            .await
    }
}
