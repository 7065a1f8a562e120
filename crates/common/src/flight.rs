//! Arrow Flight between services. A service implements [`FlightHandler`] (rows in, rows out) and
//! [`FlightServer`] turns it into a `FlightService`: it decodes prost tickets and DoPut commands,
//! bounds what a peer may send, maps errors to gRPC status codes, and continues the caller's W3C
//! trace context. [`FlightPool`] is the client side: cached channels per address, or an in-process
//! handler for the all-in-one mode, so the same calling code runs in both.

use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::telemetry;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::utils::{batches_to_flight_data, flight_data_to_batches};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket as FlightTicket,
};
use coldstart_proto::{PutAck, PutCommand, Ticket};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use parking_lot::RwLock;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, Span};

/// Rows in, rows out: what a service exposes over Flight.
#[async_trait::async_trait]
pub trait FlightHandler: Send + Sync + 'static {
    /// Answers a DoGet: the schema (also for an empty answer) and the batches.
    async fn get(&self, ticket: Ticket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)>;
    /// Takes a DoPut; returns how many rows were durably accepted.
    async fn put(&self, cmd: PutCommand, batches: Vec<RecordBatch>) -> ServiceResult<u64>;
}

/// A [`FlightHandler`] served as an Arrow Flight service.
pub struct FlightServer {
    handler: Arc<dyn FlightHandler>,
    role: &'static str,
    max_put_bytes: usize,
}

impl FlightServer {
    /// Wraps `handler`; a DoPut carrying more than `max_put_bytes` in all is refused.
    pub fn new(handler: Arc<dyn FlightHandler>, role: &'static str, max_put_bytes: usize) -> Self {
        Self {
            handler,
            role,
            max_put_bytes,
        }
    }

    /// The tonic service with message limits raised to `max_message_bytes` (tonic's default is 4 MiB).
    pub fn into_service(self, max_message_bytes: usize) -> FlightServiceServer<FlightServer> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not served by coldstart"
    )))
}

#[tonic::async_trait]
impl FlightService for FlightServer {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unimplemented("handshake")
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented("list_flights")
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unimplemented("get_flight_info")
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unimplemented("poll_flight_info")
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unimplemented("get_schema")
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unimplemented("do_action")
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented("list_actions")
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented("do_exchange")
    }

    async fn do_get(
        &self,
        request: Request<FlightTicket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let span = tracing::info_span!(
            "flight.do_get",
            role = self.role,
            otel.kind = "server",
            ticket = tracing::field::Empty
        );
        telemetry::set_parent_from_metadata(&span, request.metadata());
        let handler = self.handler.clone();
        async move {
            let ticket = Ticket::decode(request.into_inner().ticket).map_err(|e| {
                Status::invalid_argument(format!("ticket is not a coldstart.v1.Ticket: {e}"))
            })?;
            Span::current().record("ticket", ticket_name(&ticket));
            let (schema, batches) = handler.get(ticket).await.map_err(Status::from)?;
            let data = batches_to_flight_data(&schema, &batches)
                .map_err(|e| Status::internal(format!("encode flight data: {e}")))?;
            Ok(Response::new(
                futures::stream::iter(data.into_iter().map(Ok)).boxed(),
            ))
        }
        .instrument(span)
        .await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let span = tracing::info_span!(
            "flight.do_put",
            role = self.role,
            otel.kind = "server",
            command = tracing::field::Empty,
            rows = tracing::field::Empty
        );
        telemetry::set_parent_from_metadata(&span, request.metadata());
        let handler = self.handler.clone();
        let max = self.max_put_bytes;
        async move {
            let mut stream = request.into_inner();
            let mut data = Vec::new();
            let mut bytes = 0usize;
            while let Some(msg) = stream.message().await? {
                bytes += msg.data_header.len() + msg.data_body.len();
                if bytes > max {
                    return Err(Status::from(ServiceError::new(
                        ErrorCode::PayloadTooLarge,
                        format!("do_put carries more than {max} bytes (limits.max_message_bytes)"),
                    )));
                }
                data.push(msg);
            }
            let cmd = data
                .first()
                .and_then(|d| d.flight_descriptor.as_ref())
                .ok_or_else(|| Status::invalid_argument("do_put without a flight descriptor"))?;
            let cmd = PutCommand::decode(cmd.cmd.clone()).map_err(|e| {
                Status::invalid_argument(format!(
                    "descriptor cmd is not a coldstart.v1.PutCommand: {e}"
                ))
            })?;
            Span::current().record("command", put_name(&cmd));
            let batches = flight_data_to_batches(&data)
                .map_err(|e| Status::invalid_argument(format!("decode flight data: {e}")))?;
            let rows = handler.put(cmd, batches).await.map_err(Status::from)?;
            Span::current().record("rows", rows);
            let ack = PutResult {
                app_metadata: PutAck { rows }.encode_to_vec().into(),
            };
            Ok(Response::new(
                futures::stream::once(async move { Ok(ack) }).boxed(),
            ))
        }
        .instrument(span)
        .await
    }
}

/// A short name for a ticket, for spans and metrics.
pub fn ticket_name(t: &Ticket) -> &'static str {
    use coldstart_proto::ticket::Kind;
    match t.kind {
        Some(Kind::Lists(_)) => "lists",
        Some(Kind::ItemMeta(_)) => "item_meta",
        Some(Kind::Profile(_)) => "profile",
        Some(Kind::Dump(_)) => "dump",
        Some(Kind::Recall(_)) => "recall",
        Some(Kind::Ledger(_)) => "ledger",
        Some(Kind::Popular(_)) => "popular",
        Some(Kind::Similarity(_)) => "similarity",
        None => "none",
    }
}

/// A short name for a put command.
pub fn put_name(c: &PutCommand) -> &'static str {
    use coldstart_proto::put_command::Kind;
    match c.kind {
        Some(Kind::PublishItems(_)) => "publish_items",
        Some(Kind::IngestEvents(_)) => "ingest_events",
        Some(Kind::UpsertUsers(_)) => "upsert_users",
        Some(Kind::IndexPostings(_)) => "index_postings",
        Some(Kind::RegisterItems(_)) => "register_items",
        Some(Kind::CountExposures(_)) => "count_exposures",
        None => "none",
    }
}

/// Address prefix of in-process members (all-in-one mode).
pub const LOCAL_SCHEME: &str = "local:";

/// Client side of Flight: one lazily connected channel per address, or an in-process handler.
pub struct FlightPool {
    channels: RwLock<HashMap<String, Channel>>,
    local: RwLock<HashMap<String, Arc<dyn FlightHandler>>>,
    max_message_bytes: usize,
    timeout: Duration,
}

impl FlightPool {
    /// A pool whose calls time out after `timeout` and accept messages up to `max_message_bytes`.
    pub fn new(max_message_bytes: usize, timeout: Duration) -> Self {
        Self {
            channels: RwLock::default(),
            local: RwLock::default(),
            max_message_bytes,
            timeout,
        }
    }

    /// Serves `addr` (which must start with [`LOCAL_SCHEME`]) from an in-process handler.
    pub fn register_local(&self, addr: &str, handler: Arc<dyn FlightHandler>) {
        self.local.write().insert(addr.to_string(), handler);
    }

    fn channel(&self, addr: &str) -> ServiceResult<Channel> {
        if let Some(c) = self.channels.read().get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ServiceError::internal(format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let c = ep.connect_lazy();
        self.channels.write().insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn client(&self, addr: &str) -> ServiceResult<FlightServiceClient<Channel>> {
        Ok(FlightServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// Bounds a whole call, response stream included, by the pool's timeout.
    async fn deadline<T>(
        &self,
        addr: &str,
        call: impl std::future::Future<Output = ServiceResult<T>>,
    ) -> ServiceResult<T> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(ServiceError::unavailable(format!(
                    "peer {addr}: no answer within {:?}",
                    self.timeout
                )))
            })
    }

    /// DoGet `ticket` from the member at `addr`.
    pub async fn get(&self, addr: &str, ticket: &Ticket) -> ServiceResult<Vec<RecordBatch>> {
        let span = tracing::info_span!(
            "flight.client.get",
            peer = addr,
            ticket = ticket_name(ticket),
            otel.kind = "client"
        );
        self.deadline(addr, async {
            let local = self.local.read().get(addr).cloned();
            if let Some(h) = local {
                return h.get(ticket.clone()).await.map(|(_, b)| b);
            }
            let mut req = Request::new(FlightTicket {
                ticket: ticket.encode_to_vec().into(),
            });
            telemetry::inject_into_metadata(req.metadata_mut());
            let stream = self
                .client(addr)?
                .do_get(req)
                .await
                .map_err(|s| peer_error(addr, s))?
                .into_inner();
            let data: Vec<FlightData> = stream
                .try_collect()
                .await
                .map_err(|s| peer_error(addr, s))?;
            Ok(flight_data_to_batches(&data)?)
        })
        .instrument(span)
        .await
    }

    /// DoPut `batches` with `cmd` to the member at `addr`; returns the acknowledged row count.
    pub async fn put(
        &self,
        addr: &str,
        cmd: &PutCommand,
        batches: Vec<RecordBatch>,
    ) -> ServiceResult<u64> {
        let span = tracing::info_span!(
            "flight.client.put",
            peer = addr,
            command = put_name(cmd),
            otel.kind = "client"
        );
        self.deadline(addr, async {
            let local = self.local.read().get(addr).cloned();
            if let Some(h) = local {
                return h.put(*cmd, batches).await;
            }
            let Some(schema) = batches.first().map(|b| b.schema()) else {
                return Ok(0);
            };
            let mut data = batches_to_flight_data(&schema, &batches)?;
            data[0].flight_descriptor = Some(FlightDescriptor::new_cmd(cmd.encode_to_vec()));
            let mut req = Request::new(futures::stream::iter(data));
            telemetry::inject_into_metadata(req.metadata_mut());
            let mut resp = self
                .client(addr)?
                .do_put(req)
                .await
                .map_err(|s| peer_error(addr, s))?
                .into_inner();
            let mut rows = 0;
            while let Some(r) = resp.message().await.map_err(|s| peer_error(addr, s))? {
                rows += PutAck::decode(r.app_metadata).map(|a| a.rows).unwrap_or(0);
            }
            Ok(rows)
        })
        .instrument(span)
        .await
    }
}

/// Errors from a peer keep their code; transport failures become `Unavailable`, naming the peer.
fn peer_error(addr: &str, s: Status) -> ServiceError {
    let mut e = ServiceError::from(s);
    if e.code == ErrorCode::Unavailable
        || e.code == ErrorCode::Internal && e.message.contains("transport")
    {
        e.code = ErrorCode::Unavailable;
        e.message = format!("peer {addr}: {}", e.message);
    }
    e
}
