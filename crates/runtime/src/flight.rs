//! Arrow Flight between services. Each service has a [`Protocol`]: its own ticket type (what a
//! DoGet may ask) and command type (what a DoPut may carry). A service implements
//! [`FlightHandler`] for its protocol (rows in, rows out) and [`FlightServer`] turns it into a
//! `FlightService`: it decodes the protocol's tickets and commands, refuses another service's,
//! bounds what a peer may send, maps errors to gRPC status codes, and continues the caller's W3C
//! trace context. [`FlightPool`] is the client side, typed by protocol: cached channels per
//! address, or an in-process handler for the all-in-one mode, so the same calling code runs in
//! both. The typed clients of `coldstart-contracts` are built on it.

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
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use parking_lot::RwLock;
use prost::Message;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, Span};

/// What a DoPut answers in its `PutResult`'s app_metadata: how many rows were durably accepted
/// (protobuf `uint64 rows = 1`; see `proto/README.md`).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct PutAck {
    /// Rows accepted.
    #[prost(uint64, tag = "1")]
    pub rows: u64,
}

/// A prost message that travels as a Flight ticket or DoPut command.
pub trait FlightMessage: Message + Default + Clone + Send + Sync + 'static {
    /// The name of the variant it carries, for spans and errors; `None` when it carries none
    /// (an empty message, or a ticket meant for another service).
    fn kind_name(&self) -> Option<&'static str>;
}

/// One service's Flight contract: the ticket and command types it serves.
pub trait Protocol: Send + Sync + 'static {
    /// The service, for errors (`"profile"`).
    const SERVICE: &'static str;
    /// What a DoGet asks.
    type Ticket: FlightMessage;
    /// What a DoPut carries.
    type Command: FlightMessage;
}

/// Rows in, rows out: what a service exposes over Flight.
#[async_trait::async_trait]
pub trait FlightHandler<P: Protocol>: Send + Sync + 'static {
    /// Answers a DoGet: the schema (also for an empty answer) and the batches.
    async fn get(&self, ticket: P::Ticket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)>;
    /// Takes a DoPut; returns how many rows were durably accepted.
    async fn put(&self, cmd: P::Command, batches: Vec<RecordBatch>) -> ServiceResult<u64>;
}

/// The error for a ticket or command (`what`) that names none of `P`'s kinds. The server refuses
/// those before a handler sees them; handlers answer the same if one reaches them in-process.
pub fn not_served<P: Protocol>(what: &str) -> ServiceError {
    ServiceError::invalid(format!(
        "the {} service does not serve this {what}: it names none of the {} service's kinds \
         (a message meant for another service?)",
        P::SERVICE,
        P::SERVICE
    ))
}

/// A [`FlightHandler`] served as an Arrow Flight service.
pub struct FlightServer<P: Protocol> {
    handler: Arc<dyn FlightHandler<P>>,
    max_put_bytes: usize,
}

impl<P: Protocol> FlightServer<P> {
    /// Wraps `handler`; a DoPut carrying more than `max_put_bytes` in all is refused.
    pub fn new(handler: Arc<dyn FlightHandler<P>>, max_put_bytes: usize) -> Self {
        Self {
            handler,
            max_put_bytes,
        }
    }

    /// The tonic service with message limits raised to `max_message_bytes` (tonic's default is 4 MiB).
    pub fn into_service(self, max_message_bytes: usize) -> FlightServiceServer<FlightServer<P>> {
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
impl<P: Protocol> FlightService for FlightServer<P> {
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
            role = P::SERVICE,
            otel.kind = "server",
            ticket = tracing::field::Empty
        );
        telemetry::set_parent_from_metadata(&span, request.metadata());
        let handler = self.handler.clone();
        async move {
            let ticket = P::Ticket::decode(request.into_inner().ticket).map_err(|e| {
                Status::invalid_argument(format!("the ticket is not a {} ticket: {e}", P::SERVICE))
            })?;
            let name = ticket
                .kind_name()
                .ok_or_else(|| Status::from(not_served::<P>("ticket")))?;
            Span::current().record("ticket", name);
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
            role = P::SERVICE,
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
            let cmd = P::Command::decode(cmd.cmd.clone()).map_err(|e| {
                Status::invalid_argument(format!(
                    "the descriptor's cmd is not a {} command: {e}",
                    P::SERVICE
                ))
            })?;
            let name = cmd
                .kind_name()
                .ok_or_else(|| Status::from(not_served::<P>("command")))?;
            Span::current().record("command", name);
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

/// Address prefix of in-process members (all-in-one mode).
pub const LOCAL_SCHEME: &str = "local:";

/// Client side of Flight: one lazily connected channel per address, or an in-process handler.
pub struct FlightPool {
    channels: RwLock<HashMap<String, Channel>>,
    /// In-process handlers by address, each an `Arc<dyn FlightHandler<P>>` of its protocol.
    local: RwLock<HashMap<String, Arc<dyn Any + Send + Sync>>>,
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
    pub fn register_local<P: Protocol>(&self, addr: &str, handler: Arc<dyn FlightHandler<P>>) {
        self.local
            .write()
            .insert(addr.to_string(), Arc::new(handler));
    }

    /// The in-process handler at `addr`, if there is one; an error if it serves another protocol.
    fn local<P: Protocol>(&self, addr: &str) -> ServiceResult<Option<Arc<dyn FlightHandler<P>>>> {
        let Some(h) = self.local.read().get(addr).cloned() else {
            return Ok(None);
        };
        h.downcast_ref::<Arc<dyn FlightHandler<P>>>()
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                ServiceError::internal(format!(
                    "in-process member {addr} does not serve the {} protocol",
                    P::SERVICE
                ))
            })
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
    pub async fn get<P: Protocol>(
        &self,
        addr: &str,
        ticket: &P::Ticket,
    ) -> ServiceResult<Vec<RecordBatch>> {
        let span = tracing::info_span!(
            "flight.client.get",
            peer = addr,
            service = P::SERVICE,
            ticket = ticket.kind_name().unwrap_or("none"),
            otel.kind = "client"
        );
        self.deadline(addr, async {
            if let Some(h) = self.local::<P>(addr)? {
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
    pub async fn put<P: Protocol>(
        &self,
        addr: &str,
        cmd: &P::Command,
        batches: Vec<RecordBatch>,
    ) -> ServiceResult<u64> {
        let span = tracing::info_span!(
            "flight.client.put",
            peer = addr,
            service = P::SERVICE,
            command = cmd.kind_name().unwrap_or("none"),
            otel.kind = "client"
        );
        self.deadline(addr, async {
            if let Some(h) = self.local::<P>(addr)? {
                return h.put(cmd.clone(), batches).await;
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
