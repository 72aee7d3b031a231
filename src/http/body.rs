//! The one response body type every handler returns (a boxed stream of byte chunks, so a file
//! download can stream while a host-meta answer is one buffer), and small response builders.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

/// A response body: full, empty or streamed, boxed so every handler has the same type.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A body holding `data`.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|e| match e {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A request's whole body, at most `max` bytes: 413 for more (refused at once when
/// `Content-Length` says so, without reading), or when the body cannot be read.
pub async fn read_all(req: Request<Incoming>, max: usize) -> Result<Bytes, StatusCode> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    Ok(http_body_util::Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?
        .to_bytes())
}

/// A response with `status`, a content type and a body.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    data: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(data));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A short plain-text answer with `status` (404, 405, 413, …).
pub fn status(status: StatusCode) -> Response<Body> {
    let text = format!("{status}\n");
    response(status, "text/plain; charset=utf-8", text)
}

/// Lets web pages on any origin use the endpoint (XEP-0156 §3, XEP-0124 §15): the endpoints
/// hold no cookies or ambient credentials, so `*` gives a page nothing it could not do itself.
pub fn allow_any_origin(r: &mut Response<Body>) {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
}
