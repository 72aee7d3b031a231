//! RFC 7395 XMPP over WebSocket at `/xmpp-websocket`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::{self, Body};
use super::Conn;

pub async fn handle(_conn: Arc<Conn>, _req: Request<Incoming>) -> Response<Body> {
    body::status(StatusCode::NOT_IMPLEMENTED)
}
