//! XEP-0363 HTTP File Upload: the PUT/GET/HEAD/OPTIONS handler under `/upload/` on
//! `upload.DOMAIN`. Placeholder until the upload service lands: every request is 404.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::body::{self, Body};
use super::Conn;

pub async fn handle(_conn: Arc<Conn>, _req: Request<Incoming>) -> Response<Body> {
    body::status(StatusCode::NOT_FOUND)
}
