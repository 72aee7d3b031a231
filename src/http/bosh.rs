//! XEP-0124/XEP-0206 XMPP over BOSH at `/http-bind`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::{self, Body};
use super::{Conn, Web};

/// Live BOSH sessions by `sid`.
#[derive(Default)]
pub struct Sessions {}

pub async fn handle(_conn: Arc<Conn>, _req: Request<Incoming>) -> Response<Body> {
    body::status(StatusCode::NOT_IMPLEMENTED)
}

/// Ends sessions whose client stopped polling.
pub async fn expire_loop(_web: Arc<Web>) {
    futures_lite::future::pending::<()>().await
}
