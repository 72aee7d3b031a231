//! An in-memory byte stream that lets `session::c2s` serve a WebSocket or BOSH client.
